//! The settle window: while the evidence is not decisive (an unbound parent,
//! a probe under way), look again every `poll` until the state settles or
//! `window` runs out. Bounded whatever happens, so udev is never held for
//! long. The clock is injectable, so the orderings are tested without
//! sleeping.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::decision::{Decision, Outcome, Policy, decide};
use crate::event::Event;
use crate::evidence::{Evidence, Gatherer, Settle};
use crate::host::sysfs::Sysfs;
use crate::state::State;

/// Settle-window timing.
#[derive(Clone, Copy, Debug)]
pub struct SettleWindow {
    pub window: Duration,
    pub poll: Duration,
}

/// Time, for the settle loop: the real monotonic clock, or a test's.
pub trait Clock {
    /// Time since the loop started.
    fn elapsed(&self) -> Duration;
    fn sleep(&mut self, d: Duration);
}

/// The monotonic clock and a real sleep.
pub struct RealClock(Instant);

impl RealClock {
    pub fn start() -> RealClock {
        RealClock(Instant::now())
    }
}

impl Clock for RealClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Gathers evidence and decides, through the settle window.
pub fn classify(
    sysfs: &Sysfs,
    state: &State,
    event: &Event,
    policy: &Policy,
    window: SettleWindow,
) -> Result<(Evidence, Decision)> {
    let gatherer = Gatherer::new(sysfs, state, event)?.with_cloud(policy.cloud);
    settle(
        || gatherer.snapshot(),
        policy,
        window,
        &mut RealClock::start(),
    )
}

/// Looks (`look`) and decides until decided, polling while unsettled, and
/// stopping the moment the state is decisive.
pub fn settle(
    mut look: impl FnMut() -> Result<Evidence>,
    policy: &Policy,
    window: SettleWindow,
    clock: &mut impl Clock,
) -> Result<(Evidence, Decision)> {
    let mut polls = 0u32;
    let mut seen_unbound = false;
    loop {
        let mut ev = look()?;
        polls += 1;
        ev.seen_unbound = seen_unbound;
        if polls > 1 {
            ev.settle = Some(Settle {
                elapsed_ms: clock.elapsed().as_millis() as u64,
                polls,
                expired: false,
            });
        }
        match decide(&ev, policy) {
            Outcome::Decided(d) => return Ok((ev, d)),
            Outcome::Unsettled(why) => {
                // Only a look that saw the driver unbound makes a later bound
                // one a re-bind (a probe under way was bound all along).
                seen_unbound |= if ev.parent_present {
                    ev.parent_driver.is_none()
                } else {
                    ev.device_driver.is_none()
                };
                let elapsed = clock.elapsed();
                if elapsed >= window.window {
                    ev.settle = Some(Settle {
                        elapsed_ms: elapsed.as_millis() as u64,
                        polls,
                        expired: true,
                    });
                    return match decide(&ev, policy) {
                        Outcome::Decided(d) => Ok((ev, d)),
                        Outcome::Unsettled(_) => bail!("no verdict after the settle window: {why}"),
                    };
                }
                crate::log::debug(&format!("poll {polls}: {why}"));
                clock.sleep(window.poll.min(window.window - elapsed));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Verdict;
    use crate::host::sysfs::Netdev;

    /// Time passes only when the loop sleeps; the "kernel" reads it too.
    #[derive(Clone, Default)]
    struct FakeClock(std::rc::Rc<std::cell::Cell<Duration>>);

    impl Clock for FakeClock {
        fn elapsed(&self) -> Duration {
            self.0.get()
        }
        fn sleep(&mut self, d: Duration) {
            self.0.set(self.0.get() + d);
        }
    }

    const PARENT: &str = "/devices/pci0000:00/0000:00:05.0";
    const POLICY: Policy = Policy {
        handle_virtual: false,
        return_window_ms: 300_000,
        scope: crate::scope::Scope {
            manage: Vec::new(),
            ignore: Vec::new(),
        },
        cloud: crate::host::cloud::CloudSetting::Auto,
    };
    const WINDOW: SettleWindow = SettleWindow {
        window: Duration::from_millis(300),
        poll: Duration::from_millis(10),
    };

    /// A remove of ens5 whose parent is present and unbound, module live.
    fn unbound() -> Evidence {
        crate::decision::tests::remove()
    }

    /// Runs the loop over a kernel that changes to `then` at `at` ms.
    fn run(at: u64, then: impl Fn(&mut Evidence)) -> (Decision, Option<Settle>) {
        let mut clock = FakeClock::default();
        let now = clock.clone();
        let look = || {
            let mut ev = unbound();
            if now.elapsed() >= Duration::from_millis(at) {
                then(&mut ev);
            }
            Ok(ev)
        };
        let (ev, d) = settle(look, &POLICY, WINDOW, &mut clock).unwrap();
        (d, ev.settle)
    }

    #[test]
    fn the_parent_vanishing_in_the_window_is_a_removal_when_it_happens() {
        let (d, s) = run(120, |ev| {
            ev.parent_present = false;
            ev.device_present = false;
        });
        assert_eq!(d.verdict, Verdict::DeviceRemoved);
        let s = s.unwrap();
        assert_eq!((s.elapsed_ms, s.expired), (120, false));
    }

    #[test]
    fn a_rebind_in_the_window_is_a_return() {
        let (d, _) = run(50, |ev| ev.parent_driver = Some("ena".into()));
        assert_eq!(d.verdict, Verdict::DeviceReturned);
        assert!(d.reasons[0].contains("re-bound"), "{:?}", d.reasons);
    }

    #[test]
    fn a_probe_that_registers_its_netdev_is_a_return_never_a_netns_move() {
        // Bound from the first look, no net device until 40 ms.
        let mut clock = FakeClock::default();
        let mut looks = 0;
        let look = || {
            looks += 1;
            let mut ev = unbound();
            ev.parent_driver = Some("ena".into());
            if looks > 4 {
                ev.netdevs = vec![Netdev {
                    name: "ens5".into(),
                    devpath: format!("{PARENT}/net/ens5"),
                    mac: Some("02:00:00:00:00:05".into()),
                    ifindex: Some(7),
                }];
            }
            Ok(ev)
        };
        let (_, d) = settle(look, &POLICY, WINDOW, &mut clock).unwrap();
        assert_eq!(d.verdict, Verdict::DeviceReturned);
        assert!(
            !d.reasons.iter().any(|r| r.contains("namespace")),
            "{:?}",
            d.reasons
        );
        assert!(
            !d.reasons.iter().any(|r| r.contains("re-bound")),
            "{:?}",
            d.reasons
        );
        assert_eq!(clock.elapsed(), Duration::from_millis(40));
    }

    #[test]
    fn an_unbind_that_stays_is_decided_when_the_window_runs_out() {
        let (d, s) = run(u64::MAX, |_| {});
        assert_eq!(d.verdict, Verdict::DriverUnbind);
        let s = s.unwrap();
        assert_eq!((s.elapsed_ms, s.polls, s.expired), (300, 31, true));
    }
}
