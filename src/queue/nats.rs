//! The NATS JetStream backend (SPEC §10): durable and replicated, shared by any number of
//! API and worker processes.
//!
//! - Stream: file storage, work-queue retention (an event leaves the stream when a worker
//!   acks or terminates it), `discard: new` with `max_bytes` (a full stream refuses
//!   publishes instead of dropping what it holds), `duplicate_window`, `replicas`.
//! - Each event is published on `<subject_prefix>.<idempotency key>` with `Nats-Msg-Id` =
//!   the key; `publish` resolves after JetStream's publish ack (the event is on disk, on a
//!   quorum of replicas), bounded by `publish_timeout`, and fails at once while the client
//!   is not connected: a request gets a fast 503, never a hang.
//! - Workers share one durable pull consumer with explicit acks. The attempt number is the
//!   message's delivery count; a nak carries the retry delay (JetStream redelivers; no
//!   in-process delay heap); a worker that dies without acking has its messages redelivered
//!   after `ack_wait`.
//! - The client reconnects forever in the background; the queue depth (consumer pending +
//!   unacked) is refreshed in the background too, so metrics never wait on the network.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{
    self, DirectGetErrorKind, DiscardPolicy, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, AckKind, Message};
use chrono::{DateTime, Utc};
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;

use super::{
    Delivery, QueueBackend, QueueError, QueuedEvent, Received, Settle, Settlement, Settler,
    Undecodable,
};
use crate::config::NatsSettings;
use crate::domain::{Event, IdempotencyKey};

/// How often the queue depth and the consumer's health are read in the background.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// When a pull comes back empty early (other pulls are waiting), how long to pause before
/// the next one, so idle workers do not spin.
const EMPTY_PULL_PAUSE: Duration = Duration::from_millis(20);

/// Why the backend could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("JetStream stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("JetStream consumer {consumer} on stream {stream}: {reason}")]
    Consumer {
        stream: String,
        consumer: String,
        reason: String,
    },
}

#[derive(Clone)]
pub struct NatsQueue {
    shared: Arc<Shared>,
}

struct Shared {
    client: async_nats::Client,
    /// Publishes and acks: bounded by `publish_timeout`.
    js: jetstream::Context,
    stream: stream::Stream,
    consumer: PullConsumer,
    subject_prefix: String,
    publish_timeout: Duration,
    ack_wait: Duration,
    /// Last reading of the consumer's pending + unacked messages.
    depth: AtomicU64,
    /// Of those, the ones not delivered yet.
    pending: AtomicU64,
    /// Whether the last background reading succeeded, and why not.
    healthy: AtomicBool,
    last_error: Mutex<String>,
}

impl NatsQueue {
    /// Connects, and creates or updates the stream and the durable consumer to match the
    /// settings. Bounded by `connect_timeout` for the connection and each set-up request.
    pub async fn connect(settings: &NatsSettings) -> Result<Self, SetupError> {
        let url = settings.servers().join(",");
        let connect_error = |reason: String| SetupError::Connect {
            url: url.clone(),
            reason,
        };
        let client = async_nats::ConnectOptions::new()
            .name("messaging-server")
            .connection_timeout(settings.connect_timeout)
            .request_timeout(Some(settings.connect_timeout))
            // A dead connection is noticed within seconds, not at the 60 s default.
            .ping_interval(Duration::from_secs(10))
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; reconnecting")
                    }
                    other => tracing::info!(event = %other, "NATS event"),
                }
            })
            .connect(settings.servers())
            .await
            .map_err(|e| connect_error(e.to_string()))?;

        let admin = jetstream::ContextBuilder::new()
            .timeout(settings.connect_timeout)
            .build(client.clone());
        let stream = ensure_stream(&admin, settings).await?;
        let consumer = ensure_consumer(&stream, settings).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(settings.publish_timeout)
            .build(client.clone());
        let shared = Arc::new(Shared {
            client,
            js,
            stream,
            consumer,
            subject_prefix: settings.subject_prefix.clone(),
            publish_timeout: settings.publish_timeout,
            ack_wait: settings.ack_wait,
            depth: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
            last_error: Mutex::new("not checked yet".into()),
        });
        shared.refresh().await;
        tokio::spawn(refresh_forever(Arc::downgrade(&shared)));
        tracing::info!(
            servers = %url,
            stream = %settings.stream,
            consumer = %settings.consumer,
            replicas = settings.replicas,
            "NATS JetStream queue ready"
        );
        Ok(NatsQueue { shared })
    }
}

fn stream_config(settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name: settings.stream.clone(),
        subjects: vec![format!("{}.>", settings.subject_prefix)],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        discard: DiscardPolicy::New,
        max_bytes: i64::try_from(settings.max_bytes).unwrap_or(i64::MAX),
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        // For `is_queued`: the last message of a key's subject, read from any replica.
        allow_direct: true,
        ..Default::default()
    }
}

async fn ensure_stream(
    admin: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<stream::Stream, SetupError> {
    let wanted = stream_config(settings);
    let stream_error = |reason: String| SetupError::Stream {
        stream: settings.stream.clone(),
        reason,
    };
    if let Ok(existing) = admin.get_stream(&settings.stream).await {
        // NATS cannot change these in place; say so rather than run on the wrong semantics.
        let current = &existing.cached_info().config;
        if current.retention != wanted.retention || current.storage != wanted.storage {
            return Err(stream_error(format!(
                "exists with retention {:?} and storage {:?}, but this service needs \
                 retention WorkQueue and storage File; delete or rename the stream \
                 (queue.nats.stream) once it is empty",
                current.retention, current.storage
            )));
        }
    }
    admin.create_or_update_stream(wanted).await.map_err(|e| {
        stream_error(format!(
            "cannot be created or updated to match the settings: {e}"
        ))
    })?;
    admin
        .get_stream(&settings.stream)
        .await
        .map_err(|e| stream_error(e.to_string()))
}

async fn ensure_consumer(
    stream: &stream::Stream,
    settings: &NatsSettings,
) -> Result<PullConsumer, SetupError> {
    let config = pull::Config {
        durable_name: Some(settings.consumer.clone()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        filter_subject: format!("{}.>", settings.subject_prefix),
        max_ack_pending: settings.max_ack_pending,
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| SetupError::Consumer {
            stream: settings.stream.clone(),
            consumer: settings.consumer.clone(),
            reason: format!(
                "cannot be created or updated to match the settings: {e} (a consumer whose \
                 filter or delivery policy differs must be deleted first)"
            ),
        })
}

/// Reads the depth every [`REFRESH_EVERY`] until the queue is dropped.
async fn refresh_forever(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(REFRESH_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.refresh().await;
    }
}

impl Shared {
    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn not_connected() -> QueueError {
        QueueError::Unavailable("not connected to NATS".into())
    }

    async fn refresh(&self) {
        let reading = if self.connected() {
            match tokio::time::timeout(self.publish_timeout, self.consumer.get_info()).await {
                Ok(Ok(info)) => Ok((
                    info.num_pending + info.num_ack_pending as u64,
                    info.num_pending,
                )),
                Ok(Err(e)) => Err(format!("cannot read the consumer: {e}")),
                Err(_) => Err("the consumer did not answer in time".to_string()),
            }
        } else {
            Err("not connected to NATS".to_string())
        };
        match reading {
            Ok((depth, pending)) => {
                self.depth.store(depth, Ordering::Relaxed);
                self.pending.store(pending, Ordering::Relaxed);
                self.healthy.store(true, Ordering::Relaxed);
            }
            Err(reason) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(reason, "NATS JetStream not answering");
                }
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = reason;
            }
        }
    }

    fn subject(&self, key: &str) -> String {
        format!("{}.{}", self.subject_prefix, subject_token(key))
    }

    /// Publishes one event and waits for its publish ack. `dedupe`: with `Nats-Msg-Id`,
    /// so NATS drops a repeat within the duplicate window.
    async fn publish(&self, event: &Event, dedupe: bool) -> Result<(), QueueError> {
        if !self.connected() {
            return Err(Self::not_connected());
        }
        let payload = serde_json::to_vec(event)
            .map_err(|e| QueueError::Refused(format!("the event cannot be encoded: {e}")))?;
        let key = event.idempotency_key.as_str();
        let mut message = PublishMessage::build().payload(payload.into());
        if dedupe {
            message = message.message_id(key);
        }
        let subject = self.subject(key);
        let acked = async {
            let ack = self.js.send_publish(subject, message).await?;
            ack.await
        };
        match tokio::time::timeout(self.publish_timeout, acked).await {
            Ok(Ok(_ack)) => Ok(()),
            Ok(Err(err)) => Err(publish_error(err)),
            Err(_) => Err(QueueError::Unavailable(format!(
                "no publish ack within {}",
                humantime::format_duration(self.publish_timeout)
            ))),
        }
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Received, QueueError> {
        if !self.connected() {
            return Err(Self::not_connected());
        }
        let started = Instant::now();
        // no_wait with expires: the server answers as soon as it has any message (up to
        // `max`), or when `wait` passes with none.
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| QueueError::Unavailable(format!("cannot pull from the consumer: {e}")))?;
        let mut received = Received::default();
        // The client's own fallback for a lost answer is `wait` + 5 s; a second is plenty.
        let deadline = tokio::time::Instant::from_std(crate::time::after(
            started,
            wait.saturating_add(Duration::from_secs(1)),
        ));
        loop {
            match tokio::time::timeout_at(deadline, batch.next()).await {
                Ok(Some(Ok(message))) => self.take(message, &mut received),
                Ok(Some(Err(err))) if received.is_empty() => {
                    return Err(QueueError::Unavailable(format!("pull failed: {err}")));
                }
                // What arrived so far is handed out; the rest is redelivered after ack_wait.
                Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
            }
        }
        if received.is_empty() && started.elapsed() < wait {
            tokio::time::sleep(EMPTY_PULL_PAUSE).await;
        }
        Ok(received)
    }

    fn take(&self, message: Message, received: &mut Received) {
        let (delivered, published_at) = match message.info() {
            Ok(info) => (
                u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX),
                DateTime::from_timestamp_nanos(
                    i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0),
                ),
            ),
            Err(_) => (1, Utc::now()),
        };
        let (message, acker) = message.split();
        let settle = Settle::new(NatsSettler {
            acker: Arc::new(acker),
        });
        match serde_json::from_slice::<Event>(&message.payload) {
            Ok(mut event) => {
                // The delivery count is the truth: the payload is never rewritten.
                event.attempt = delivered - 1;
                received.deliveries.push(Delivery::new(event, settle));
            }
            Err(err) => {
                let key = message
                    .subject
                    .as_str()
                    .strip_prefix(&self.subject_prefix)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .unwrap_or(message.subject.as_str())
                    .to_string();
                received.undecodable.push(Undecodable {
                    key,
                    payload: message.payload.to_vec(),
                    error: format!("the payload is not an event: {err}"),
                    attempts: delivered,
                    published_at,
                    settle,
                });
            }
        }
    }

    async fn is_queued(&self, key: &str) -> Result<bool, QueueError> {
        Ok(self.find_queued(key).await?.is_some())
    }

    /// The last message of the key's subject, which a work-queue stream keeps until it is
    /// acked or terminated.
    async fn find_queued(&self, key: &str) -> Result<Option<QueuedEvent>, QueueError> {
        if !self.connected() {
            return Err(Self::not_connected());
        }
        /// Only what the status resource needs of the payload.
        #[derive(serde::Deserialize)]
        struct Owner {
            customer_id: uuid::Uuid,
            accepted_at: DateTime<Utc>,
        }
        let lookup = self.stream.direct_get_last_for_subject(self.subject(key));
        match tokio::time::timeout(self.publish_timeout, lookup).await {
            Ok(Ok(message)) => Ok(Some(
                match serde_json::from_slice::<Owner>(&message.payload) {
                    Ok(owner) => QueuedEvent {
                        customer_id: Some(owner.customer_id),
                        accepted_at: owner.accepted_at,
                    },
                    Err(_) => QueuedEvent {
                        customer_id: None,
                        accepted_at: DateTime::from_timestamp(message.time.unix_timestamp(), 0)
                            .unwrap_or_else(Utc::now),
                    },
                },
            )),
            Ok(Err(e)) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Ok(Err(e)) => Err(QueueError::Unavailable(format!(
                "cannot look the key up: {e}"
            ))),
            Err(_) => Err(QueueError::Unavailable("the key look-up timed out".into())),
        }
    }
}

/// Idempotency keys are hex digests, already valid subject tokens; anything else is
/// hex-encoded so it cannot add tokens or wildcards to the subject.
fn subject_token(key: &str) -> String {
    let safe = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if safe {
        key.to_string()
    } else {
        format!("x{}", hex::encode(key))
    }
}

fn publish_error(err: PublishError) -> QueueError {
    use jetstream::ErrorCode;
    let text = err.to_string();
    // JetStream's own error code, when the server answered the publish with one.
    let code = std::error::Error::source(&err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code);
    // `discard: new` at `max_bytes` or `max_msgs` ("maximum bytes exceeded") is a store
    // failure of the stream; the server's storage limits have codes of their own.
    let full = [
        ErrorCode::STREAM_STORE_FAILED,
        ErrorCode::STORAGE_RESOURCES_EXCEEDED,
        ErrorCode::MEMORY_RESOURCES_EXCEEDED,
    ];
    match err.kind() {
        PublishErrorKind::Other if code.is_some_and(|c| full.contains(&c)) => {
            QueueError::Refused(text)
        }
        PublishErrorKind::MaxPayloadExceeded => QueueError::Refused(text),
        _ => QueueError::Unavailable(text),
    }
}

struct NatsSettler {
    acker: Arc<jetstream::message::Acker>,
}

impl Settler for NatsSettler {
    fn settle(&self, how: Settlement) -> BoxFuture<'static, Result<(), QueueError>> {
        let kind = match how {
            Settlement::Ack => AckKind::Ack,
            Settlement::Nak(delay) => AckKind::Nak(Some(delay)),
            Settlement::Term => AckKind::Term,
        };
        self.send(kind)
    }

    fn progress(&self) -> BoxFuture<'static, Result<(), QueueError>> {
        self.send(AckKind::Progress)
    }
}

impl NatsSettler {
    /// A lost ack is harmless: the message comes back after `ack_wait` and storing it again
    /// is a no-op (unique idempotency key).
    fn send(&self, kind: AckKind) -> BoxFuture<'static, Result<(), QueueError>> {
        let acker = self.acker.clone();
        async move {
            acker
                .ack_with(kind)
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string()))
        }
        .boxed()
    }
}

impl QueueBackend for NatsQueue {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), QueueError>> {
        let shared = self.shared.clone();
        async move { shared.publish(&event, true).await }.boxed()
    }

    /// Without `Nats-Msg-Id`: a replay within the duplicate window of the original publish
    /// must not be dropped as its duplicate.
    fn republish(&self, events: Vec<Event>) -> BoxFuture<'static, Result<(), QueueError>> {
        let shared = self.shared.clone();
        async move {
            let publishes = events.iter().map(|event| shared.publish(event, false));
            futures_util::future::join_all(publishes)
                .await
                .into_iter()
                .collect()
        }
        .boxed()
    }

    fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Received, QueueError>> {
        let shared = self.shared.clone();
        async move { shared.receive(max, wait).await }.boxed()
    }

    fn progress_interval(&self) -> Option<Duration> {
        Some(self.shared.ack_wait / 3)
    }

    fn depth(&self) -> usize {
        self.shared.depth.load(Ordering::Relaxed) as usize
    }

    /// Delivered messages (in flight, or waiting out a nak delay) look alike from here:
    /// only those never delivered count.
    fn runnable(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed) as usize
    }

    fn check(&self) -> BoxFuture<'static, Result<(), QueueError>> {
        let shared = self.shared.clone();
        async move {
            if !shared.connected() {
                return Err(Shared::not_connected());
            }
            if !shared.healthy.load(Ordering::Relaxed) {
                let reason = shared
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                return Err(QueueError::Unavailable(reason));
            }
            Ok(())
        }
        .boxed()
    }

    fn is_queued(&self, key: &IdempotencyKey) -> BoxFuture<'static, Result<bool, QueueError>> {
        let shared = self.shared.clone();
        let key = key.as_str().to_string();
        async move { shared.is_queued(&key).await }.boxed()
    }

    fn find_queued(
        &self,
        key: &IdempotencyKey,
    ) -> BoxFuture<'static, Result<Option<QueuedEvent>, QueueError>> {
        let shared = self.shared.clone();
        let key = key.as_str().to_string();
        async move { shared.find_queued(&key).await }.boxed()
    }

    fn flush(&self) -> BoxFuture<'static, ()> {
        let shared = self.shared.clone();
        async move {
            let flushed = tokio::time::timeout(shared.publish_timeout, shared.client.flush());
            if !matches!(flushed.await, Ok(Ok(()))) {
                tracing::warn!(
                    "could not flush the last acks to NATS; they come back after ack_wait"
                );
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
