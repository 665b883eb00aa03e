//! `messaging-server status`: what a running deployment is doing, from its API: readiness
//! (`/readyz`), queue depth, dead letters, and rates from two `/api/stats` samples a second
//! apart. Exit 1 when the server is not ready (or cannot be asked).

use std::time::Duration;

use serde_json::Value;

use super::server::{CallError, Server};
use crate::http::Stats;

pub enum Outcome {
    Ready,
    NotReady,
}

/// Prints the report; `Err` when the server cannot be asked at all.
pub async fn run(server: &Server) -> Result<Outcome, String> {
    let readiness = readiness(server).await;
    let samples = async {
        let first: Stats = server.get("/api/stats").await?;
        actix_web::rt::time::sleep(Duration::from_secs(1)).await;
        let second: Stats = server.get("/api/stats").await?;
        Ok::<_, CallError>((first, second))
    };
    let (first, second) = match samples.await {
        Ok(samples) => samples,
        Err(err) => {
            // Readiness needs no key: say it even when the numbers cannot be read.
            if let Err(why) = &readiness {
                println!("server        {}\nready         NO: {why}", server.base);
            }
            return Err(err.to_string());
        }
    };
    print!("{}", report(&server.base, &readiness, &first, &second));
    Ok(match readiness {
        Ok(_) => Outcome::Ready,
        Err(_) => Outcome::NotReady,
    })
}

/// `/readyz`: `Ok` with its checks, `Err` with what is not ready.
async fn readiness(server: &Server) -> Result<String, String> {
    match server.get::<Value>("/readyz").await {
        Ok(body) => {
            let checks = body["checks"].as_object().map(|checks| {
                checks
                    .iter()
                    .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            Ok(checks.unwrap_or_default())
        }
        Err(CallError::Refused(refused)) => Err(refused.detail),
        Err(other) => Err(other.to_string()),
    }
}

fn report(base: &str, readiness: &Result<String, String>, first: &Stats, second: &Stats) -> String {
    let seconds = (second.sampled_at - first.sampled_at)
        .to_std()
        .unwrap_or_default()
        .as_secs_f64();
    let rate = |pick: fn(&Stats) -> u64| {
        let delta = pick(second).saturating_sub(pick(first));
        if seconds > 0.0 {
            format!("{:.1}/s", delta as f64 / seconds)
        } else {
            "-".to_string()
        }
    };
    let ready = match readiness {
        Ok(checks) => format!("yes ({checks})"),
        Err(why) => format!("NO: {why}"),
    };
    format!(
        "server        {base}\n\
         ready         {ready}\n\
         queue         {backend}, depth {depth}\n\
         dead letters  {dlq}\n\
         rates         accepted {accepted}  stored {stored}  sent {sent}  failed {failed}  (over {seconds:.1} s)\n\
         workers       {workers} active in this process\n\
         delivery      {delivery}\n",
        backend = second.queue_backend,
        depth = second.queue_depth,
        dlq = second.dlq_size.map_or_else(
            || "unknown (the database does not answer)".to_string(),
            |n| format!("{n} waiting")
        ),
        accepted = rate(|s| s.totals.accepted),
        stored = rate(|s| s.totals.stored),
        sent = rate(|s| s.totals.sent),
        failed = rate(|s| s.totals.failed),
        workers = second.workers_active,
        delivery = delivery(second),
    )
}

/// Due messages, and each provider's circuit in this process.
fn delivery(stats: &Stats) -> String {
    let due = stats
        .delivery_due
        .map_or_else(|| "unknown".to_string(), |n| n.to_string());
    let circuits: Vec<String> = stats
        .providers
        .iter()
        .map(|p| format!("{} {} ({} in flight)", p.provider, p.circuit, p.in_flight))
        .collect();
    if circuits.is_empty() {
        format!("{due} due; no senders in this process")
    } else {
        format!("{due} due; {}", circuits.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Totals;
    use chrono::{TimeZone, Utc};

    fn sample(second: u32, accepted: u64, sent: u64) -> Stats {
        Stats {
            sampled_at: Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, second).unwrap(),
            queue_backend: "memory".into(),
            queue_depth: 7,
            dlq_size: Some(2),
            workers_active: 4,
            delivery_due: Some(0),
            delivery_unsent: Some(0),
            providers: Vec::new(),
            ready: true,
            not_ready: None,
            totals: Totals {
                accepted,
                sent,
                ..Totals::default()
            },
        }
    }

    #[test]
    fn rates_come_from_the_two_samples() {
        let text = report(
            "http://x",
            &Ok("database ok".into()),
            &sample(0, 100, 10),
            &sample(2, 300, 30),
        );
        assert!(text.contains("ready         yes (database ok)"), "{text}");
        assert!(text.contains("queue         memory, depth 7"), "{text}");
        assert!(text.contains("dead letters  2 waiting"), "{text}");
        assert!(text.contains("accepted 100.0/s"), "{text}");
        assert!(text.contains("sent 10.0/s"), "{text}");
        assert!(text.contains("(over 2.0 s)"), "{text}");
        let down = report(
            "http://x",
            &Err("not ready: database".into()),
            &sample(0, 0, 0),
            &sample(1, 0, 0),
        );
        assert!(
            down.contains("ready         NO: not ready: database"),
            "{down}"
        );
    }
}
