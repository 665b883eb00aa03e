use super::*;
use crate::queue::test_event as event;

/// An event with a body of `kib` KiB, to fill a queue bounded by bytes.
fn big(key: &str, kib: usize) -> Event {
    Event {
        body: "x".repeat(kib * 1024),
        ..event(key)
    }
}

async fn take(queue: &MemoryQueue, max: usize) -> Vec<Delivery> {
    queue.receive(max, Duration::ZERO).await.unwrap().deliveries
}

#[actix_web::test]
async fn a_full_queue_makes_publishers_wait_for_room() {
    let queue = MemoryQueue::new(1, Duration::from_secs(5));
    queue.publish(event("first")).await.unwrap();
    let waiting = queue.publish(event("second"));
    let taken = take(&queue, 1).await;
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        taken[0].ack().await.unwrap();
    });
    let started = Instant::now();
    waiting.await.expect("room was made");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(queue.depth(), 1);
}

#[actix_web::test]
async fn max_bytes_bounds_a_backlog_of_large_events() {
    let size = big("a", 256).approx_bytes();
    assert!(size > 256 * 1024);
    let queue = MemoryQueue::bounded(10_000, 3 * size, Duration::ZERO);
    for key in ["a", "b", "c"] {
        queue.publish(big(key, 256)).await.unwrap();
    }
    assert!(matches!(
        queue.publish(big("d", 256)).await,
        Err(QueueError::Full { .. })
    ));
    // A finished event makes room.
    let taken = take(&queue, 1).await;
    taken[0].ack().await.unwrap();
    queue.publish(big("d", 256)).await.unwrap();
    assert_eq!(queue.depth(), 3);
    // Once closed and taken, nothing is held.
    assert_eq!(queue.close_and_take().len(), 3);
}

#[actix_web::test]
async fn republished_events_count_their_bytes_until_finished() {
    let size = big("a", 64).approx_bytes();
    let queue = MemoryQueue::bounded(10_000, 2 * size, Duration::ZERO);
    // A restore (or a replay) puts events back without a publish.
    queue
        .republish(vec![big("a", 64), big("b", 64)])
        .await
        .unwrap();
    assert_eq!(queue.state().bytes, 2 * size);
    assert!(
        matches!(
            queue.publish(big("c", 64)).await,
            Err(QueueError::Full { .. })
        ),
        "restored events take their room"
    );
    for delivery in take(&queue, 10).await {
        delivery.ack().await.unwrap();
    }
    assert_eq!(queue.state().bytes, 0, "no drift once they are finished");
}

#[actix_web::test]
async fn capacity_counts_everything_not_finished() {
    let queue = MemoryQueue::new(2, Duration::ZERO);
    queue.publish(event("a")).await.unwrap();
    queue.publish(event("b")).await.unwrap();
    assert_eq!(
        queue.publish(event("c")).await,
        Err(QueueError::Full { capacity: 2 })
    );
    let taken = take(&queue, 10).await;
    assert_eq!(taken.len(), 2);
    assert_eq!(queue.depth(), 2, "in flight still counts");
    taken[0].ack().await.unwrap();
    assert_eq!(queue.depth(), 1);
    queue.publish(event("c")).await.unwrap();
}

#[actix_web::test]
async fn one_idempotency_key_is_in_flight_at_most_once() {
    let queue = MemoryQueue::new(10, Duration::ZERO);
    queue.publish(event("same")).await.unwrap();
    queue.publish(event("same")).await.unwrap();
    queue.publish(event("other")).await.unwrap();
    let first = take(&queue, 10).await;
    let bodies: Vec<&str> = first.iter().map(|d| d.event.body.as_str()).collect();
    assert_eq!(bodies, ["same", "other"], "the second 'same' waits");
    assert!(take(&queue, 10).await.is_empty());
    first[0].ack().await.unwrap();
    let second = take(&queue, 10).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].event.body, "same");
}

#[actix_web::test]
async fn a_retry_comes_back_after_its_delay() {
    let queue = MemoryQueue::new(10, Duration::ZERO);
    queue.publish(event("later")).await.unwrap();
    let taken = take(&queue, 1).await;
    taken[0].nak(Duration::from_millis(50)).await.unwrap();
    assert!(take(&queue, 1).await.is_empty(), "not before its time");
    assert_eq!(queue.depth(), 1, "a waiting retry is part of the backlog");
    let started = Instant::now();
    let back = queue.receive(1, Duration::from_secs(2)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(back.deliveries[0].event.attempt, 1, "the next attempt");
}

#[actix_web::test]
async fn a_delivery_is_settled_once_whoever_comes_second() {
    use crate::queue::Settled;
    let queue = MemoryQueue::new(10, Duration::ZERO);
    queue.publish(event("once")).await.unwrap();
    let taken = take(&queue, 1).await;
    let copy = taken[0].clone();
    assert_eq!(taken[0].nak(Duration::ZERO).await, Ok(Settled::Now));
    assert_eq!(copy.nak(Duration::ZERO).await, Ok(Settled::AlreadySettled));
    assert_eq!(copy.term().await, Ok(Settled::AlreadySettled));
    assert_eq!(queue.snapshot().len(), 1, "one retry queued, not two");

    // A claim excludes every other settlement until it is used or dropped.
    let again = take(&queue, 1).await;
    let claim = again[0].claim().expect("open");
    assert!(again[0].claim().is_none());
    assert_eq!(again[0].ack().await, Ok(Settled::AlreadySettled));
    drop(claim);
    assert!(
        again[0].is_open(),
        "a dropped claim leaves it to the next holder"
    );
    let claim = again[0].claim().expect("open again");
    assert_eq!(claim.ack().await, Ok(Settled::Now));
    assert_eq!(queue.depth(), 0);
}

#[actix_web::test]
async fn is_queued_covers_waiting_delayed_and_in_flight_events() {
    let queue = MemoryQueue::new(10, Duration::ZERO);
    let e = event("where");
    let key = e.idempotency_key.clone();
    assert!(!queue.is_queued(&key).await.unwrap());
    queue.publish(e).await.unwrap();
    assert!(queue.is_queued(&key).await.unwrap(), "waiting");
    let taken = take(&queue, 1).await;
    assert!(queue.is_queued(&key).await.unwrap(), "in flight");
    taken[0].nak(Duration::from_secs(60)).await.unwrap();
    assert!(queue.is_queued(&key).await.unwrap(), "delayed");
    let _ = queue.close_and_take();
    assert!(!queue.is_queued(&key).await.unwrap());
}

#[actix_web::test]
async fn closing_returns_every_unfinished_event() {
    let queue = MemoryQueue::new(10, Duration::ZERO);
    for body in ["in flight", "delayed", "ready"] {
        queue.publish(event(body)).await.unwrap();
    }
    let taken = take(&queue, 2).await;
    taken[1].nak(Duration::from_secs(60)).await.unwrap();
    let mut left: Vec<String> = queue.close_and_take().into_iter().map(|e| e.body).collect();
    left.sort();
    assert_eq!(left, ["delayed", "in flight", "ready"]);
    assert_eq!(queue.publish(event("late")).await, Err(QueueError::Closed));
    assert_eq!(
        queue.receive(1, Duration::ZERO).await.unwrap_err(),
        QueueError::Closed
    );
}
