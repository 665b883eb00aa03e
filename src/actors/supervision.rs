//! Restart on panic (SPEC §6), for every actor of the pipeline.
//!
//! actix's `Supervisor` restarts an actor that stops itself, but a handler that panics
//! kills the actor for good: its mailbox closes and every later send fails. So each
//! pipeline actor is started under a `Supervisor` (its address, and the messages waiting
//! in its mailbox, outlive restarts) and runs its handlers' code through [`caught`]: a
//! panic is logged, counted in `messaging_actor_restarts_total{actor}`, and the actor
//! stops itself, which its Supervisor turns into a restart. The handler keeps ownership of
//! the message it was given, so what that message carried (a claimed delivery) is settled
//! by a path that does not run the code that panicked.
//!
//! Work that holds deliveries for a while (database writes, provider calls, timers) runs
//! in detached tasks, not in the actor's context: a restart drops the context's futures
//! and timers, and must not drop an event with them.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use actix::prelude::*;

use crate::telemetry::Metrics;

/// Is the actor there and taking messages? Answered at once by every pipeline actor, so a
/// reply within a bound tells readiness the actor is neither dead nor wedged.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

/// Runs `f`; a panic comes back as its message.
pub fn caught<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(panic_message)
}

/// Awaits `work`; a panic comes back as its message. For work that runs in detached tasks,
/// where no actor restart would reach it.
pub async fn caught_async<F: std::future::Future>(work: F) -> Result<F::Output, String> {
    use futures_util::FutureExt;
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(panic_message)
}

/// The text a panic was raised with.
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// Records a caught panic of `actor` (a label of [`crate::telemetry::ACTORS`]).
pub fn record_panic(actor: &'static str, reason: &str, metrics: &Metrics) {
    tracing::error!(actor, reason, "actor panicked; restarting it");
    metrics.actor_restarted(actor);
}

/// Records the panic and stops the actor, which its Supervisor restarts.
pub fn restart<A>(actor: &'static str, reason: &str, metrics: &Metrics, ctx: &mut Context<A>)
where
    A: Actor<Context = Context<A>>,
{
    record_panic(actor, reason, metrics);
    ctx.stop();
}
