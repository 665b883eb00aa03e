//! Settings: loading, layering and every check.

use std::time::Duration;

use uuid::Uuid;

use super::providers::*;
use super::validate::*;
use super::values::*;
use super::*;

fn with_env(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    Settings::load(&Sources {
        file: None,
        env: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

/// The key of the error that refuses these variables; panics if they are accepted.
fn refused(vars: &[(&str, &str)]) -> String {
    match with_env(vars) {
        Err(SettingsError::Invalid { key, .. }) => key,
        other => panic!("{vars:?} accepted: {other:?}"),
    }
}

#[test]
fn defaults_match_the_spec() {
    let s = Settings::defaults();
    assert_eq!(s.server.port, 8080);
    assert_eq!(s.server.body_limit, 512 * 1024);
    assert_eq!(s.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(s.server.body_timeout, Duration::from_secs(30));
    assert_eq!(s.server.stall_timeout, Duration::from_secs(30));
    assert_eq!(s.delivery.poll_interval, Duration::from_millis(250));
    assert_eq!(s.delivery.lease, Duration::from_secs(60));
    assert_eq!(s.webhooks.timeout, Duration::from_secs(10));
    let hours = |h: u64| Duration::from_secs(h * 3600);
    assert_eq!(
        s.webhooks.retry_schedule,
        [
            Duration::from_secs(5),
            Duration::from_secs(300),
            Duration::from_secs(1800),
            hours(2),
            hours(5),
            hours(10),
            hours(10)
        ]
    );
    assert_eq!(s.webhooks.disable_after, hours(5 * 24));
    assert!(!s.webhooks.allow_private);
    assert_eq!(s.providers.sms.concurrency, 500);
    assert_eq!(s.providers.sms.rate, None);
    assert_eq!(s.providers.sms.breaker_failures, 5);
    assert_eq!(s.providers.sms.breaker_cooldown, Duration::from_secs(30));
    assert_eq!(s.database.url, "sqlite://data/messaging.db?mode=rwc");
    assert_eq!(s.queue.backend, QueueBackendKind::Memory);
    assert_eq!(s.queue.capacity, 10_000);
    assert!(s.worker.enabled);
    assert_eq!(s.worker.concurrency, 4);
    assert_eq!(s.retry.max_attempts, 10);
    assert_eq!(s.retry.max_age, Duration::from_secs(72 * 3600));
    assert_eq!(s.retry.base_delay, Duration::from_secs(1));
    assert_eq!(s.retry.max_delay, Duration::from_secs(3600));
    assert_eq!(s.dlq.retention, Duration::from_secs(30 * 86400));
    assert_eq!(s.providers.sms.kind, ProviderKind::Mock);
    assert_eq!(s.providers.sms.mock_seed, None);
    assert_eq!(s.log.format, LogFormat::Pretty);
    assert!(s.auth.required, "secure by default");
    assert_eq!(s.auth.cache_ttl, Duration::from_secs(5));
    assert!(s.providers.sms.webhook_secret.is_empty());
    assert_eq!(s.providers.sms.webhook_tolerance, Duration::from_secs(300));
    assert!(!s.telemetry.otlp_enabled(), "no export unless asked for");
    assert_eq!(s.telemetry.otlp_interval, Duration::from_secs(10));
    assert_eq!(s.telemetry.service_name, "messaging-server");
    assert_eq!(s.telemetry.trace_sample_ratio, 1.0);
    let on = with_env(&[(
        "MESSAGING__TELEMETRY__OTLP_ENDPOINT",
        "https://collector.internal:4318",
    )])
    .unwrap();
    assert!(on.telemetry.otlp_enabled());
}

#[test]
fn rates_parse_and_bad_ones_name_the_key() {
    let s = with_env(&[
        ("MESSAGING__RATE_LIMIT__PER_KEY", "500/s"),
        ("MESSAGING__RATE_LIMIT__PER_IP", "30/m"),
        ("AUTH_REQUIRED", "false"),
    ])
    .unwrap();
    assert_eq!(
        s.rate_limit.per_key,
        Rate {
            count: 500,
            per: Duration::from_secs(1)
        }
    );
    assert_eq!(s.rate_limit.per_ip.per, Duration::from_secs(60));
    assert!(!s.auth.required);
    for bad in ["500", "fast", "0/s", "-1/s", "10/fortnight", "/s"] {
        match with_env(&[("MESSAGING__RATE_LIMIT__PER_KEY", bad)]) {
            Err(SettingsError::Invalid { key, message }) => {
                assert_eq!(key, "rate_limit.per_key", "{bad}");
                assert!(message.contains(bad), "{bad}: {message}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn secrets_never_show_in_debug_output() {
    let s = with_env(&[(
        "MESSAGING__PROVIDERS__SMS__WEBHOOK_SECRET",
        "a-very-secret-webhook-key",
    )])
    .unwrap();
    assert_eq!(
        s.providers.sms.webhook_secret.expose(),
        "a-very-secret-webhook-key"
    );
    assert!(!format!("{s:?}").contains("a-very-secret"));
}

#[test]
fn environment_overrides_with_long_and_short_names() {
    let s = with_env(&[
        ("MESSAGING__QUEUE__CAPACITY", "5"),
        ("MESSAGING__PROVIDERS__SMS__MOCK_ERROR_RATE", "1.0"),
        ("PORT", "9999"),
        ("WORKER_ENABLED", "false"),
        ("RETRY_MAX_AGE", "2h"),
        ("DATABASE_URL", "postgres://u@h/db"),
    ])
    .unwrap();
    assert_eq!(s.queue.capacity, 5);
    assert_eq!(s.providers.sms.mock_error_rate, 1.0);
    assert_eq!(s.server.port, 9999);
    assert!(!s.worker.enabled);
    assert_eq!(s.retry.max_age, Duration::from_secs(7200));
    assert_eq!(s.database.url, "postgres://u@h/db");
}

#[test]
fn log_filters() {
    for ok in [
        "info",
        "WARN",
        "info,sqlx=warn",
        "messaging_server::actors=debug,off",
    ] {
        assert!(valid_log_filter(ok), "{ok}");
    }
    for bad in ["", "loud", "info,", "sqlx=loud", "a b=info"] {
        assert!(!valid_log_filter(bad), "{bad}");
    }
}

#[test]
fn enumerated_keys_list_their_values() {
    match with_env(&[("QUEUE_BACKEND", "kafka")]) {
        Err(SettingsError::Invalid { key, message }) => {
            assert_eq!(key, "queue.backend");
            assert!(message.contains("memory"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_deployment_file_layers_over_the_defaults() {
    let path = std::env::temp_dir().join(format!("ms-config-{}.toml", Uuid::new_v4()));
    std::fs::write(&path, "[worker]\nconcurrency = 7\n").unwrap();
    let s = Settings::load(&Sources {
        file: Some(path.clone()),
        env: vec![],
    })
    .unwrap();
    std::fs::remove_file(path).ok();
    assert_eq!(s.worker.concurrency, 7);
    assert_eq!(s.worker.batch_size, Settings::defaults().worker.batch_size);
}

#[test]
fn a_short_and_a_long_name_that_disagree_are_refused() {
    let err = with_env(&[("PORT", "8081"), ("MESSAGING__SERVER__PORT", "eighty")]).unwrap_err();
    assert!(
        matches!(&err, SettingsError::Invalid { key, message } if key == "server.port"
            && message.contains("PORT=\"8081\"") && message.contains("MESSAGING__SERVER__PORT=\"eighty\"")),
        "{err}"
    );
    let agreed = with_env(&[("PORT", "8081"), ("MESSAGING__SERVER__PORT", "8081")]).unwrap();
    assert_eq!(agreed.server.port, 8081);
}

#[test]
fn invalid_values_name_the_key() {
    let cases = [
        ("PORT", "eighty", "server.port"),
        ("RETRY_MAX_AGE", "soon", "retry.max_age"),
        ("RETRY_MAX_AGE", "1000years", "retry.max_age"),
        ("QUEUE_BACKEND", "carrier-pigeon", "queue.backend"),
        ("WORKER_CONCURRENCY", "0", "worker.concurrency"),
        (
            "MESSAGING__PROVIDERS__EMAIL__MOCK_ERROR_RATE",
            "1.5",
            "providers.email.mock_error_rate",
        ),
        ("DATABASE_URL", "mysql://x", "database.url"),
        ("LOG_LEVEL", "loud!", "log.level"),
        ("LOG_LEVEL", "loud", "log.level"),
        ("MESSAGING__SERVER__PORTT", "1", "server.portt"),
        ("MESSAGING__SERVER__BODY_LIMIT", "lots", "server.body_limit"),
        ("AUTH_REQUIRED", "maybe", "auth.required"),
        ("MESSAGING__AUTH__CACHE_TTL", "0s", "auth.cache_ttl"),
        ("MESSAGING__RATE_LIMIT__BURST", "0", "rate_limit.burst"),
        ("MESSAGING__RATE_LIMIT__PER_IP", "many", "rate_limit.per_ip"),
        (
            "MESSAGING__PROVIDERS__SMS__WEBHOOK_SECRET",
            "short",
            "providers.sms.webhook_secret",
        ),
        (
            "MESSAGING__PROVIDERS__EMAIL__WEBHOOK_TOLERANCE",
            "soon",
            "providers.email.webhook_tolerance",
        ),
        (
            "MESSAGING__SERVER__BODY_TIMEOUT",
            "0s",
            "server.body_timeout",
        ),
        (
            "MESSAGING__SERVER__STALL_TIMEOUT",
            "0s",
            "server.stall_timeout",
        ),
        (
            "MESSAGING__DELIVERY__POLL_INTERVAL",
            "0s",
            "delivery.poll_interval",
        ),
        ("MESSAGING__DELIVERY__LEASE", "5s", "delivery.lease"),
        (
            "MESSAGING__PROVIDERS__SMS__CONCURRENCY",
            "0",
            "providers.sms.concurrency",
        ),
        (
            "MESSAGING__PROVIDERS__EMAIL__RATE",
            "fast",
            "providers.email.rate",
        ),
        (
            "MESSAGING__PROVIDERS__SMS__BREAKER_FAILURES",
            "0",
            "providers.sms.breaker_failures",
        ),
        (
            "MESSAGING__TELEMETRY__OTLP_ENDPOINT",
            "127.0.0.1:4318",
            "telemetry.otlp_endpoint",
        ),
        (
            "MESSAGING__TELEMETRY__OTLP_ENDPOINT",
            "http://",
            "telemetry.otlp_endpoint",
        ),
        (
            "MESSAGING__TELEMETRY__OTLP_ENDPOINT",
            "http://collector :4318",
            "telemetry.otlp_endpoint",
        ),
        (
            "MESSAGING__TELEMETRY__OTLP_INTERVAL",
            "0s",
            "telemetry.otlp_interval",
        ),
        (
            "MESSAGING__TELEMETRY__SERVICE_NAME",
            " ",
            "telemetry.service_name",
        ),
        (
            "MESSAGING__TELEMETRY__TRACE_SAMPLE_RATIO",
            "2",
            "telemetry.trace_sample_ratio",
        ),
        ("NATS_URL", "", "queue.nats.url"),
        ("NATS_URL", "nats://a:4222,::bad::", "queue.nats.url"),
        (
            "MESSAGING__QUEUE__NATS__STREAM",
            "MY.STREAM",
            "queue.nats.stream",
        ),
        (
            "MESSAGING__QUEUE__NATS__SUBJECT_PREFIX",
            "a.*",
            "queue.nats.subject_prefix",
        ),
        (
            "MESSAGING__QUEUE__NATS__REPLICAS",
            "7",
            "queue.nats.replicas",
        ),
        (
            "MESSAGING__QUEUE__NATS__ACK_WAIT",
            "10ms",
            "queue.nats.ack_wait",
        ),
        (
            "MESSAGING__QUEUE__NATS__MAX_BYTES",
            "huge",
            "queue.nats.max_bytes",
        ),
    ];
    for (name, value, key) in cases {
        match with_env(&[(name, value)]) {
            Err(SettingsError::Invalid { key: k, .. }) => assert_eq!(k, key, "{name}={value}"),
            other => panic!("{name}={value}: expected an error naming {key}, got {other:?}"),
        }
    }
}

#[test]
fn nats_settings_have_the_spec_defaults_and_short_env_names() {
    let nats = Settings::defaults().queue.nats;
    assert_eq!(nats.url, "nats://127.0.0.1:4222");
    assert_eq!(nats.stream, "MESSAGING");
    assert_eq!(nats.subject_prefix, "messaging.events");
    assert_eq!(nats.consumer, "messaging-workers");
    assert_eq!(nats.replicas, 1);
    assert_eq!(nats.ack_wait, Duration::from_secs(30));
    assert_eq!(nats.duplicate_window, Duration::from_secs(120));
    assert_eq!(nats.publish_timeout, Duration::from_secs(2));
    let s = with_env(&[
        ("QUEUE_BACKEND", "nats"),
        ("NATS_URL", "nats://n1:4222, nats://n2:4222,nats://n3:4222"),
        ("MESSAGING__QUEUE__NATS__REPLICAS", "3"),
    ])
    .unwrap();
    assert_eq!(s.queue.backend, QueueBackendKind::Nats);
    assert_eq!(
        s.queue.nats.servers(),
        ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
    );
    assert_eq!(s.queue.nats.replicas, 3);
}

#[test]
fn the_production_example_is_valid() {
    let s = Settings::load(&Sources {
        file: Some(PathBuf::from("config/production.toml")),
        env: vec![],
    })
    .unwrap();
    assert_eq!(s.queue.backend, QueueBackendKind::Nats);
    assert_eq!(s.queue.nats.replicas, 3);
    assert_eq!(s.queue.nats.servers().len(), 3);
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn spill_files_go_beside_the_sqlite_file_unless_set() {
    let mut s = Settings::defaults();
    let dir = |s: &Settings| s.queue.spill_directory(&s.database);
    assert_eq!(dir(&s), PathBuf::from("data"));
    s.database.url = "sqlite:///var/lib/ms/messaging.db?mode=rwc".into();
    assert_eq!(dir(&s), PathBuf::from("/var/lib/ms"));
    s.database.url = "sqlite://messaging.db".into();
    assert_eq!(dir(&s), PathBuf::from("."));
    s.database.url = "postgres://u@h/db".into();
    assert_eq!(dir(&s), PathBuf::from("data"));
    s.queue.spill_dir = "/srv/spill".into();
    assert_eq!(dir(&s), PathBuf::from("/srv/spill"));
}

#[test]
fn pool_size_is_chosen_per_database_unless_set() {
    let mut database = Settings::defaults().database;
    assert_eq!(
        database.max_connections, 0,
        "the shipped default is automatic"
    );
    database.url = "sqlite://data/messaging.db?mode=rwc".into();
    assert_eq!(database.pool_size(), 4);
    database.url = "postgres://postgres@127.0.0.1/messaging".into();
    assert_eq!(database.pool_size(), 10);
    database.max_connections = 3;
    assert_eq!(database.pool_size(), 3);
}

#[test]
fn an_smtp_provider_is_for_email_and_needs_its_server() {
    let smtp = ("MESSAGING__PROVIDERS__EMAIL__KIND", "smtp");
    let host = (
        "MESSAGING__PROVIDERS__EMAIL__HOST",
        "email-smtp.eu-west-1.amazonaws.com",
    );
    let user = ("MESSAGING__PROVIDERS__EMAIL__USERNAME", "AKIAEXAMPLE");
    let password = ("MESSAGING__PROVIDERS__EMAIL__PASSWORD", "a-smtp-password");
    assert_eq!(
        refused(&[
            ("MESSAGING__PROVIDERS__SMS__KIND", "smtp"),
            ("MESSAGING__PROVIDERS__SMS__HOST", host.1),
        ]),
        "providers.sms.kind"
    );
    assert_eq!(refused(&[smtp]), "providers.email.host");
    assert_eq!(
        refused(&[
            smtp,
            (
                "MESSAGING__PROVIDERS__EMAIL__HOST",
                "smtp://mail.example.com"
            )
        ]),
        "providers.email.host"
    );
    assert_eq!(refused(&[smtp, host, user]), "providers.email.password");
    assert_eq!(refused(&[smtp, host, password]), "providers.email.username");
    let plain = ("MESSAGING__PROVIDERS__EMAIL__TLS", "none");
    assert_eq!(
        refused(&[smtp, host, user, password, plain]),
        "providers.email.tls"
    );
    assert_eq!(
        refused(&[smtp, host, ("MESSAGING__PROVIDERS__EMAIL__TLS", "ssl")]),
        "providers.email.tls"
    );

    let s = with_env(&[smtp, host, user, password]).unwrap();
    let email = &s.providers.email;
    assert_eq!((email.tls, email.port), (SmtpTls::Starttls, 0));
    assert!(!format!("{s:?}").contains("a-smtp-password"), "never shown");
    let local = [
        smtp,
        ("MESSAGING__PROVIDERS__EMAIL__HOST", "127.0.0.1"),
        ("MESSAGING__PROVIDERS__EMAIL__PORT", "2525"),
        plain,
    ];
    let s = with_env(&local).unwrap();
    assert_eq!(s.providers.email.port, 2525);
    assert_eq!(s.providers.email.tls, SmtpTls::None);

    // The password from a file (a mounted secret), its line end trimmed.
    let file = std::env::temp_dir().join(format!("smtp-password-{}", std::process::id()));
    std::fs::write(&file, "from-a-file\n").unwrap();
    let path = file.display().to_string();
    let from_file = ("MESSAGING__PROVIDERS__EMAIL__PASSWORD_FILE", path.as_str());
    let s = with_env(&[smtp, host, user, from_file]).unwrap();
    assert_eq!(s.providers.email.password.expose(), "from-a-file");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        refused(&[smtp, host, user, from_file]),
        "providers.email.password_file"
    );
}

#[test]
fn a_twilio_provider_needs_its_account_and_token() {
    let account = (
        "MESSAGING__PROVIDERS__SMS__ACCOUNT_SID",
        "AC0123456789abcdef0123456789abcdef",
    );
    let twilio = ("MESSAGING__PROVIDERS__SMS__KIND", "twilio");
    assert_eq!(refused(&[twilio]), "providers.sms.account_sid");
    assert_eq!(refused(&[twilio, account]), "providers.sms.auth_token");
    assert_eq!(
        refused(&[
            ("MESSAGING__PROVIDERS__EMAIL__KIND", "twilio"),
            ("MESSAGING__PROVIDERS__EMAIL__ACCOUNT_SID", account.1),
            ("MESSAGING__PROVIDERS__EMAIL__AUTH_TOKEN", "token"),
        ]),
        "providers.email.kind"
    );
    let token = ("MESSAGING__PROVIDERS__SMS__AUTH_TOKEN", "token");
    assert_eq!(
        refused(&[
            twilio,
            account,
            token,
            ("MESSAGING__PROVIDERS__SMS__BASE_URL", "api.twilio.com")
        ]),
        "providers.sms.base_url"
    );
    assert_eq!(
        refused(&[
            twilio,
            account,
            token,
            ("MESSAGING__PROVIDERS__SMS__MESSAGING_SERVICE_SID", "MGxyz")
        ]),
        "providers.sms.messaging_service_sid"
    );
    assert!(with_env(&[twilio, account, token]).is_ok());
    for (key, bad) in [
        ("PUBLIC_URL", "msg.example.com"),
        ("PUBLIC_URL", "https://msg.example.com/?x=1"),
        ("FALLBACK_URL", "ftp://backup.example.com"),
    ] {
        let var = format!("MESSAGING__PROVIDERS__SMS__{key}");
        assert_eq!(
            refused(&[twilio, account, token, (&var, bad)]),
            format!("providers.sms.{}", key.to_lowercase())
        );
    }

    // The token from a file (a mounted secret), its line end trimmed.
    let file = std::env::temp_dir().join(format!("twilio-token-{}", std::process::id()));
    std::fs::write(&file, "from-a-file\n").unwrap();
    let path = file.display().to_string();
    let s = with_env(&[
        twilio,
        account,
        ("MESSAGING__PROVIDERS__SMS__AUTH_TOKEN_FILE", &path),
    ])
    .unwrap();
    assert_eq!(s.providers.sms.auth_token.expose(), "from-a-file");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        refused(&[
            twilio,
            account,
            ("MESSAGING__PROVIDERS__SMS__AUTH_TOKEN_FILE", &path)
        ]),
        "providers.sms.auth_token_file"
    );
}
