//! The `nightly = CRON` time matcher: five crontab fields (minute hour day-of-month
//! month day-of-week), each `*`, `*/N`, `A`, `A-B`, `A-B/N` or a comma list of them,
//! evaluated in UTC.
//!
//! As in crontab, when both day-of-month and day-of-week are restricted a day matches
//! if either does; day-of-week 0 and 7 are both Sunday.

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron expression {expr:?}: {why}")]
pub struct CronError {
    pub expr: String,
    pub why: String,
}

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

impl Cron {
    /// Parse five cron fields.
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let err = |why: String| CronError {
            expr: expr.to_string(),
            why,
        };
        let words: Vec<&str> = expr.split_whitespace().collect();
        if words.len() != 5 {
            return Err(err(format!("expected 5 fields, got {}", words.len())));
        }
        let mut sets = [0u64; 5];
        for (i, (word, (what, lo, hi))) in words.iter().zip(FIELDS).enumerate() {
            for item in word.split(',') {
                let (range, step) = match item.split_once('/') {
                    Some((r, s)) => (r, s.parse::<u32>().ok().filter(|n| *n >= 1)),
                    None => (item, Some(1)),
                };
                let bad = || {
                    err(format!(
                        "{what} field {word:?}: use *, */N, A, A-B or A-B/N with {lo}-{hi}"
                    ))
                };
                let step = step.ok_or_else(bad)?;
                let (a, b) = if range == "*" {
                    (lo, hi)
                } else {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    let a: u32 = a.parse().map_err(|_| bad())?;
                    let b: u32 = b.parse().map_err(|_| bad())?;
                    // `A/N` means A, A+N, … up to the end, as in Vixie cron.
                    let b = if !range.contains('-') && item.contains('/') {
                        hi
                    } else {
                        b
                    };
                    (a, b)
                };
                if a < lo || b > hi || a > b {
                    return Err(bad());
                }
                // `step` may be as large as u32::MAX: stop before it overflows.
                let mut v = Some(a);
                while let Some(x) = v.filter(|x| *x <= b) {
                    sets[i] |= 1 << x;
                    v = x.checked_add(step);
                }
            }
        }
        // Sunday is 0 and 7.
        if sets[4] & (1 << 7) != 0 {
            sets[4] = (sets[4] | 1) & !(1 << 7);
        }
        Ok(Cron {
            minutes: sets[0],
            hours: sets[1],
            days: sets[2],
            months: sets[3],
            weekdays: sets[4],
            days_any: words[2] == "*",
            weekdays_any: words[4] == "*",
        })
    }

    /// Whether the minute starting at unix second `t` (UTC) matches.
    pub fn matches(&self, t: i64) -> bool {
        let (days_since_epoch, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
        let minute = (secs / 60) % 60;
        let hour = secs / 3600;
        let (_, month, day) = civil_from_days(days_since_epoch);
        // 1970-01-01 was a Thursday (4).
        let weekday = (days_since_epoch + 4).rem_euclid(7);
        let bit = |set: u64, v: i64| set & (1u64 << v) != 0;
        if !bit(self.minutes, minute) || !bit(self.hours, hour) || !bit(self.months, month) {
            return false;
        }
        let dom = bit(self.days, day);
        let dow = bit(self.weekdays, weekday);
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first matching minute strictly after unix second `after` (its start, in
    /// unix seconds); `None` if none within eight years (e.g. `0 0 31 2 *`).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let mut t = after.div_euclid(60) * 60 + 60;
        let limit = t + 8 * 366 * 86_400;
        while t < limit {
            let days = t.div_euclid(86_400);
            let (_, month, _) = civil_from_days(days);
            if self.months & (1 << month) == 0 {
                // Skip to the next day quickly; months are rare misses.
                t = (days + 1) * 86_400;
                continue;
            }
            let secs = t.rem_euclid(86_400);
            if self.hours & (1 << (secs / 3600)) == 0 || !self.day_matches(days) {
                t = if self.day_matches(days) {
                    (t.div_euclid(3600) + 1) * 3600
                } else {
                    (days + 1) * 86_400
                };
                continue;
            }
            if self.matches(t) {
                return Some(t);
            }
            t += 60;
        }
        None
    }

    fn day_matches(&self, days: i64) -> bool {
        let (_, _, day) = civil_from_days(days);
        let weekday = (days + 4).rem_euclid(7);
        let dom = self.days & (1 << day) != 0;
        let dow = self.weekdays & (1 << weekday) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let (y, m, d) = crate::calendar::civil_from_days(z);
    (y, i64::from(m), i64::from(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date and time.
    fn at(y: i64, mo: i64, d: i64, h: i64, mi: i64) -> i64 {
        let days = crate::calendar::days_from_civil(y, mo as u32, d as u32);
        days * 86_400 + h * 3600 + mi * 60
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(
            civil_from_days(at(2026, 12, 1, 0, 0) / 86_400),
            (2026, 12, 1)
        );
        assert_eq!(
            civil_from_days(at(2024, 2, 29, 0, 0) / 86_400),
            (2024, 2, 29)
        );
    }

    #[test]
    fn every_field_form() {
        let c = Cron::parse("0 3 * * *").unwrap();
        assert!(c.matches(at(2026, 12, 1, 3, 0)));
        assert!(!c.matches(at(2026, 12, 1, 3, 1)));
        assert!(!c.matches(at(2026, 12, 1, 4, 0)));
        let c = Cron::parse("*/15 * * * *").unwrap();
        assert!(c.matches(at(2026, 12, 1, 7, 45)));
        assert!(!c.matches(at(2026, 12, 1, 7, 46)));
        let c = Cron::parse("5,10-12 * * * *").unwrap();
        for m in [5, 10, 11, 12] {
            assert!(c.matches(at(2026, 1, 1, 0, m)), "{m}");
        }
        assert!(!c.matches(at(2026, 1, 1, 0, 13)));
        let c = Cron::parse("0-30/10 * * * *").unwrap();
        assert!(c.matches(at(2026, 1, 1, 0, 20)) && !c.matches(at(2026, 1, 1, 0, 40)));
        let c = Cron::parse("7/20 * * * *").unwrap();
        assert!(c.matches(at(2026, 1, 1, 0, 47)) && !c.matches(at(2026, 1, 1, 0, 7 + 1)));
    }

    #[test]
    fn weekdays_and_days_of_month() {
        // 2026-12-01 is a Tuesday.
        let weekdays = Cron::parse("0 3 * * 1-5").unwrap();
        assert!(weekdays.matches(at(2026, 12, 1, 3, 0)));
        assert!(!weekdays.matches(at(2026, 12, 6, 3, 0)), "Sunday");
        let sunday = Cron::parse("0 0 * * 7").unwrap();
        assert!(sunday.matches(at(2026, 12, 6, 0, 0)));
        assert_eq!(sunday, Cron::parse("0 0 * * 0").unwrap());
        // Both restricted: either matches.
        let either = Cron::parse("0 0 13 * 5").unwrap();
        assert!(either.matches(at(2026, 12, 13, 0, 0)), "the 13th, a Sunday");
        assert!(either.matches(at(2026, 12, 4, 0, 0)), "a Friday");
        assert!(!either.matches(at(2026, 12, 5, 0, 0)));
        let june = Cron::parse("30 12 1 6 *").unwrap();
        assert!(june.matches(at(2027, 6, 1, 12, 30)));
        assert!(!june.matches(at(2027, 7, 1, 12, 30)));
    }

    #[test]
    fn next_after_finds_the_next_minute() {
        let c = Cron::parse("0 3 * * *").unwrap();
        let t = at(2026, 12, 1, 3, 0);
        assert_eq!(c.next_after(t - 1), Some(t));
        assert_eq!(c.next_after(t), Some(at(2026, 12, 2, 3, 0)));
        let every = Cron::parse("* * * * *").unwrap();
        assert_eq!(every.next_after(t + 30), Some(t + 60));
        let leap = Cron::parse("0 0 29 2 *").unwrap();
        assert_eq!(leap.next_after(t), Some(at(2028, 2, 29, 0, 0)));
        assert_eq!(Cron::parse("0 0 31 2 *").unwrap().next_after(t), None);
        let friday = Cron::parse("15 22 * * 5").unwrap();
        assert_eq!(friday.next_after(t), Some(at(2026, 12, 4, 22, 15)));
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?}");
        }
    }
}
