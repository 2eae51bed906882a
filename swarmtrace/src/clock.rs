//! Kernel timestamps (CLOCK_MONOTONIC, from `bpf_ktime_get_ns`) to wall-clock time, and RFC 3339.

/// Converts monotonic nanoseconds to Unix-epoch nanoseconds with an offset sampled once.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct WallClock {
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a local timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl WallClock {
    pub fn sample() -> Self {
        let mono = now_ns(libc::CLOCK_MONOTONIC);
        let real = now_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn to_unix_ns(self, mono_ns: u64) -> i128 {
        // Saturating: an offset read back from a damaged bundle may be anything.
        (mono_ns as i128).saturating_add(self.offset_ns)
    }

    /// A plausible offset (within ±290 years of the epoch); a bundle's must be.
    pub fn is_plausible(self) -> bool {
        self.offset_ns.unsigned_abs() < (i64::MAX as u128)
    }

    /// Wall-clock minus monotonic time, in ns: what a bundle records.
    pub fn offset_ns(self) -> i128 {
        self.offset_ns
    }

    pub fn from_offset_ns(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn monotonic_now_ns() -> u64 {
        now_ns(libc::CLOCK_MONOTONIC) as u64
    }
}

/// `2026-11-27T08:01:43.123456Z` (UTC, microseconds).
pub fn rfc3339_micros(unix_ns: i128) -> String {
    // Years 0000..=9999 only (RFC 3339); anything outside is clamped.
    const MIN: i128 = -62_167_219_200 * 1_000_000_000; // 0000-01-01T00:00:00Z
    const MAX: i128 = 253_402_300_799_999_999_999; // 9999-12-31T23:59:59.999999999Z
    let unix_ns = unix_ns.clamp(MIN, MAX);
    let micros = unix_ns.div_euclid(1_000);
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400) as i64;
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // date -u -d @1795766503.123456789 +%FT%T.%6NZ
        assert_eq!(
            rfc3339_micros(1_795_766_503_123_456_789),
            "2026-11-27T08:01:43.123456Z"
        );
        assert_eq!(
            rfc3339_micros(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        // Out of range (a damaged bundle): clamped, never an overflow.
        assert_eq!(rfc3339_micros(i128::MAX), "9999-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339_micros(i128::MIN), "0000-01-01T00:00:00.000000Z");
        let c = WallClock {
            offset_ns: i128::MAX,
        };
        assert_eq!(c.to_unix_ns(u64::MAX), i128::MAX);
        assert!(!c.is_plausible());
        assert!(WallClock::sample().is_plausible());
    }
}
