//! The DlqActor's part in the delivery stage: parking an outbound message whose provider
//! attempts ended (a permanent refusal, or out of attempts or age), as the RetryScheduler
//! decided. The message is held by a sender's lease; the dead letter is written with the
//! move `queued → failed`, in one transaction, only while that lease holds (see
//! [`crate::store::delivery::dead_letter`]).
//!
//! As for events off the queue: stored as it is, encoded when the database refuses it as it
//! is, logged whole (and counted) when refused even so; a database that takes no writes is
//! waited for. Written in a detached task, so a restart of the actor drops nothing.

use std::sync::Arc;

use actix::prelude::*;

use super::dlq::{DlqActor, ACTOR};
use super::faults::Site;
use super::supervision;
use super::ErrorKind;
use crate::domain::{ErrorCode, Event};
use crate::store::dead_letters::NewDeadLetter;
use crate::store::delivery::{self, Form};
use crate::store::failures;
use crate::store::outage::Hold;
use crate::store::writer::MessageWriter;
use crate::telemetry::Metrics;

/// Park this held outbound message: its last attempt (`attempts`) failed with `last_error`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ParkDelivery {
    pub id: i64,
    pub lease_token: String,
    pub event: Arc<Event>,
    pub attempts: u32,
    pub last_error: String,
    pub kind: ErrorKind,
    pub code: ErrorCode,
    pub writer: MessageWriter,
}

impl Handler<ParkDelivery> for DlqActor {
    type Result = ();

    fn handle(&mut self, park: ParkDelivery, ctx: &mut Self::Context) {
        match supervision::caught(|| self.faults.at(Site::DeadLetter, Some(&park.event))) {
            Ok(Some(stall)) => ctx.wait(stall.into_actor(self)),
            Ok(None) => {}
            // The letter is still written: the write below does not run the code that panicked.
            Err(reason) => supervision::restart(ACTOR, &reason, &self.metrics, ctx),
        }
        actix::spawn(write(park, self.metrics.clone()));
    }
}

async fn write(park: ParkDelivery, metrics: Arc<Metrics>) {
    let event = park.event.as_ref();
    let new = NewDeadLetter {
        event,
        attempts: park.attempts,
        error: &park.last_error,
        error_kind: park.kind.as_str(),
        error_code: park.code.as_str(),
    };
    let writer = &park.writer;
    let mut form = Form::Plain;
    let stored = loop {
        let stored = writer
            .health()
            .hold(
                Hold::UntilWritten,
                || true,
                || delivery::dead_letter(writer, park.id, &park.lease_token, &new, form),
            )
            .await;
        // Refused for its content: kept encoded, or, refused even so, logged whole here.
        form = match (stored, form) {
            (Err(err), Form::Plain) if !err.is_transient() => {
                tracing::warn!(event_id = %event.event_id, error = %err, "dead letter refused as it is; storing it encoded");
                Form::Encoded
            }
            (Err(err), Form::Encoded) if !err.is_transient() => {
                tracing::error!(
                    event_id = %event.event_id,
                    attempts = park.attempts,
                    last_error = %park.last_error,
                    error = %err,
                    event = %serde_json::to_string(event).unwrap_or_default(),
                    "the database refused the dead letter even encoded; the event is logged here and its message marked failed"
                );
                metrics.dlq_write_failures.add(1, &[]);
                Form::Nowhere
            }
            (stored, _) => break stored,
        };
    };
    match stored {
        Ok(true) => {
            if form != Form::Nowhere {
                metrics.dead_lettered.add(1, &[]);
                tracing::warn!(event_id = %event.event_id, encoded = form == Form::Encoded, "dead letter stored");
            }
            if let Err(err) = failures::record(writer.connection(), &new, true).await {
                tracing::debug!(event_id = %event.event_id, error = %err, "could not record the failed attempt");
            }
        }
        Ok(false) => tracing::warn!(
            event_id = %event.event_id,
            "not dead-lettered: its lease had passed to another sender, which settles it"
        ),
        // Only when holds are released (shutdown): the lease runs out and it is due again.
        Err(err) => tracing::warn!(
            event_id = %event.event_id,
            error = %err,
            "dead letter not written before shutdown; the message is due again when its lease runs out"
        ),
    }
}
