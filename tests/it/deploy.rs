//! The Grafana dashboard and Prometheus alerts in deploy/: they parse, they only query
//! metrics the service exposes, every alert leads to its runbook, and the README documents
//! every metric and alert.
//!
//! The promtool checks need `promtool` (Debian package `prometheus`; `make test` installs it).

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{spawn_app, Db};
use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/messaging.json")).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel.clone());
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested.iter().cloned());
        }
    }
    all
}

/// The PromQL of every panel target.
fn dashboard_queries() -> Vec<(String, String)> {
    panels(&dashboard())
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_string()))
        })
        .collect()
}

/// The `expr` of every rule in alerts.yml (one line, or a `|` block under it).
fn alert_queries() -> Vec<(String, String)> {
    let text = read("deploy/prometheus/alerts.yml");
    let lines: Vec<&str> = text.lines().collect();
    let mut queries = Vec::new();
    let mut alert = String::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = name.trim().to_string();
        }
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        let expr = if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - trimmed.len();
            lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            value.to_string()
        };
        queries.push((alert.clone(), expr.trim().to_string()));
    }
    queries
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// aggregations, keywords, label names (in `{…}` or `by (…)`), durations or Grafana
/// variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const SKIPPED: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let skip_to = |from: usize, close: char| {
        let mut j = from + 1;
        let mut quote = None;
        while j < chars.len() {
            match (quote, chars[j]) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), '\\') => j += 1,
                (Some(_), _) => {}
                (None, '"') | (None, '\'') => quote = Some(chars[j]),
                (None, c) if c == close => return j + 1,
                _ => {}
            }
            j += 1;
        }
        j
    };
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i, '}');
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c == '"' || c == '\'' {
            i = skip_to(i, c);
        } else if c == '$' || c.is_ascii_digit() {
            i += 1;
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let before_paren = chars.get(next) == Some(&'(');
            if GROUPING.contains(&ident.as_str()) {
                if before_paren {
                    i = skip_to(next, ')');
                }
            } else if !before_paren && !SKIPPED.contains(&ident.as_str()) {
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_told_apart_from_promql_syntax() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket{http_route=~"/api/.*",instance=~"$instance"}[$__rate_interval]))) > 0.5 and on (job) up == 0"#,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "http_server_request_duration_seconds_bucket".to_string(),
            "up".to_string()
        ])
    );
}

/// Whether the exposition has `name`, resolving a histogram's series suffixes.
fn exposed(text: &str, name: &str) -> bool {
    let declared = |n: &str, kind: Option<&str>| {
        text.lines().any(|line| {
            line.strip_prefix("# TYPE ")
                .and_then(|rest| rest.split_once(' '))
                .is_some_and(|(m, k)| m == n && kind.is_none_or(|kind| k == kind))
        })
    };
    declared(name, None)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| declared(base, Some("histogram")))
        })
}

/// `/metrics` after an accepted and a refused send have been through the pipeline.
async fn exposition_after_traffic() -> String {
    let app = spawn_app(Db::Sqlite).await;
    app.send_sms("hi").await;
    app.post_json("/api/messages/sms", &serde_json::json!({}))
        .await;
    app.drained().await;
    let (_, text) = app.get("/metrics").await;
    text.as_str().expect("text exposition").to_string()
}

#[actix_web::test]
async fn every_metric_the_dashboard_and_alerts_query_is_exposed() {
    let text = exposition_after_traffic().await;
    let text = text.as_str();

    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    for (title, expr) in &queries {
        for name in metric_names(expr) {
            if !exposed(text, &name) {
                missing.push(format!("panel {title:?}: {name}"));
            }
            used.insert(name);
        }
    }
    for (alert, expr) in alert_queries() {
        // `up` is Prometheus's own series about the scrape.
        for name in metric_names(&expr).into_iter().filter(|n| n != "up") {
            if !exposed(text, &name) {
                missing.push(format!("alert {alert}: {name}"));
            }
        }
    }
    assert!(missing.is_empty(), "not in /metrics: {missing:#?}\n{text}");

    // What an operator looks for is on the board.
    for name in [
        "messaging_queue_enqueued_total",
        "messaging_worker_processed_total",
        "messaging_provider_requests_total",
        "messaging_processing_latency_seconds_bucket",
        "messaging_queue_depth",
        "messaging_dlq_size",
        "messaging_worker_failed_total",
        "messaging_retries_total",
        "messaging_ready",
        "http_server_request_duration_seconds_count",
        "http_server_request_duration_seconds_bucket",
    ] {
        assert!(used.contains(name), "the dashboard shows {name}");
    }
}

#[test]
fn the_dashboard_is_importable() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "messaging-server");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a data source variable, so the board works with any Prometheus"
    );
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "unique ids: {panel}"
        );
        assert!(!panel["title"].as_str().unwrap().is_empty(), "{panel}");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_i64().unwrap(), grid["w"].as_i64().unwrap());
        assert!(
            x >= 0 && w > 0 && x + w <= 24,
            "inside the 24-column grid: {panel}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{target}");
        }
    }
}

/// promtool's output, or `None` (test skipped) when it is not installed.
fn promtool(args: &[&str]) -> Option<String> {
    let promtool = common::require_tool("promtool")?;
    let mut command = Command::new(promtool);
    command.args(args).current_dir(repo_file("."));
    Some(common::tools::run_ok(
        &mut command,
        &format!("promtool {args:?}"),
    ))
}

#[test]
fn alert_rules_pass_promtool_checks_and_their_unit_tests() {
    let Some(checked) = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]) else {
        return;
    };
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "deploy/prometheus/alerts.test.yml"]).unwrap();
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses rule expressions: each panel query, its Grafana variables replaced
    // by values Grafana would substitute, becomes a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_queries().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        let quoted = serde_json::to_string(&expr).unwrap();
        rules.push_str(&format!(
            "      - record: panel_query_{i}\n        expr: {quoted}\n"
        ));
    }
    let path = std::env::temp_dir().join(format!("dashboard-rules-{}.yml", uuid::Uuid::new_v4()));
    std::fs::write(&path, rules).unwrap();
    let checked = promtool(&["check", "rules", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    let Some(checked) = checked else { return };
    assert!(checked.contains("SUCCESS"), "{checked}");
}

/// The README's metrics table names every family the service exposes, with its type: an
/// operator reads it to know what a series means.
#[actix_web::test]
async fn the_readme_lists_every_metric_exposed_with_its_type() {
    let text = exposition_after_traffic().await;
    let readme = read("README.md");
    let families: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split_once(' '))
        .filter(|(name, _)| name.starts_with("messaging_") || name.starts_with("http_server_"))
        .collect();
    assert!(families.len() >= 20, "{text}");
    let undocumented: Vec<String> = families
        .iter()
        .map(|(name, kind)| format!("| `{name}` | {kind} |"))
        .filter(|row| !readme.lines().any(|line| line.starts_with(row.as_str())))
        .collect();
    assert!(
        undocumented.is_empty(),
        "README's metrics table has no row starting {undocumented:#?}"
    );
}

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_in_the_readme() {
    let alerts = read("deploy/prometheus/alerts.yml");
    let readme = read("README.md");
    // The list of alerts under Operations, up to the sentence after it.
    let listed = readme
        .split_once("\nAlerts: ")
        .and_then(|(_, rest)| rest.split_once("each has a summary"))
        .map(|(list, _)| list)
        .expect("README lists the alerts (`Alerts: …; each has a summary`)");
    let blocks: Vec<&str> = alerts.split("- alert:").skip(1).collect();
    assert!(blocks.len() >= 8, "{} alerts", blocks.len());
    for block in blocks {
        let name = block.lines().next().unwrap().trim();
        for key in ["severity:", "summary:", "description:", "runbook_url:"] {
            assert!(block.contains(key), "{name} has {key}");
        }
        let anchor = format!("runbook_url: \"README.md#{}\"", name.to_lowercase());
        assert!(block.contains(&anchor), "{name}: {anchor}");
        assert!(
            readme.lines().any(|line| line == format!("#### {name}")),
            "README has a runbook heading `#### {name}`"
        );
        assert!(
            listed.contains(&format!("`{name}`")),
            "README's list of alerts names `{name}`: {listed}"
        );
    }
}
