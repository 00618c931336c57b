//! Waiting on conditions with deadlines: poll with a short interval until the condition holds
//! or the deadline (the expectation) passes. Never a fixed sleep standing in for a check.

use std::future::Future;
use std::time::Duration;

use apollo_testkit::poll_every;

/// Calls `f` every `interval` until it returns `Some`, or `deadline` has passed (then `None`).
/// `f` is always called at least once, and once more at the deadline. The runbook's form of
/// the testkit's [`poll_every`] (an `Option` instead of a `Result`).
pub async fn poll_until<T, F, Fut>(deadline: Duration, interval: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_every(interval, deadline, || {
        let check = f();
        async move { check.await.ok_or(()) }
    })
    .await
    .ok()
}

/// Seconds with one decimal, as the report prints durations.
pub fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn returns_when_condition_holds_and_gives_up_at_deadline() {
        let start = Instant::now();
        let mut n = 0;
        let got = poll_until(Duration::from_secs(5), Duration::from_millis(10), || {
            n += 1;
            let v = n;
            async move { (v >= 3).then_some(v) }
        })
        .await;
        assert_eq!(got, Some(3));
        assert!(start.elapsed() < Duration::from_secs(2));

        let start = Instant::now();
        let none: Option<()> = poll_until(
            Duration::from_millis(100),
            Duration::from_millis(10),
            || async { None },
        )
        .await;
        assert!(none.is_none());
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
