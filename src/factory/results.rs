//! Step and build results, and the Buildbot 0.7 rules that turn the results of a
//! build's steps into the result of the build.
//!
//! The rules are the manual's (Build Steps → Common Parameters, and BuildFactory):
//! a step's own result never counts towards the build by itself — only through its
//! flags. `haltOnFailure` makes a FAILURE end the build at once as FAILURE;
//! `flunkOnFailure`/`flunkOnWarnings` make a FAILURE (or WARNINGS and FAILURE) mark
//! the build FAILURE; `warnOnFailure`/`warnOnWarnings` mark it WARNINGS, never
//! lowering a FAILURE. An EXCEPTION (a lost slave, an interrupted master) halts the
//! build and wins over everything; SKIPPED counts for nothing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::StepFlags;

/// What became of one step (or a whole build). Ordered from best to worst so that
/// `max` gives the worse of two results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepResult {
    Success,
    /// Did not run (a step skipped by the engine); neutral for the build.
    Skipped,
    Warnings,
    Failure,
    /// Something other than the command went wrong: the slave was lost, the master
    /// stopped, the command could not be started.
    Exception,
}

impl StepResult {
    /// The lower-case name the JSON API, the database and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            StepResult::Success => "success",
            StepResult::Warnings => "warnings",
            StepResult::Failure => "failure",
            StepResult::Skipped => "skipped",
            StepResult::Exception => "exception",
        }
    }
}

impl fmt::Display for StepResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A result name that is none of the five (from a damaged database row, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown result {0:?}; expected success, warnings, failure, skipped or exception")]
pub struct UnknownResult(pub String);

impl FromStr for StepResult {
    type Err = UnknownResult;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "success" => StepResult::Success,
            "warnings" => StepResult::Warnings,
            "failure" => StepResult::Failure,
            "skipped" => StepResult::Skipped,
            "exception" => StepResult::Exception,
            other => return Err(UnknownResult(other.to_string())),
        })
    }
}

/// A finished command's result as Buildbot's ShellCommand/Compile judge it: the exit
/// status first, then the warnings a log parser counted. Whether those warnings
/// matter to the build is the step flags' business, not this function's.
pub fn step_result_from_rc(rc: i32, warnings: u64) -> StepResult {
    if rc != 0 {
        StepResult::Failure
    } else if warnings > 0 {
        StepResult::Warnings
    } else {
        StepResult::Success
    }
}

/// The running result of a build, fed one finished step at a time so the engine
/// can record the build's standing after every step and know when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildResult {
    result: StepResult,
    halted: bool,
}

impl Default for BuildResult {
    fn default() -> Self {
        BuildResult::new()
    }
}

impl BuildResult {
    /// A build starts as SUCCESS: only flagged step results can make it worse.
    pub fn new() -> BuildResult {
        BuildResult {
            result: StepResult::Success,
            halted: false,
        }
    }

    /// Counts one finished step; returns whether the build goes on to the next step
    /// (false after a FAILURE with `haltOnFailure`, or an EXCEPTION).
    pub fn step_done(&mut self, result: StepResult, flags: StepFlags) -> bool {
        match result {
            StepResult::Success | StepResult::Skipped => {}
            StepResult::Warnings => {
                if flags.warn_on_warnings {
                    self.raise(StepResult::Warnings);
                }
                if flags.flunk_on_warnings {
                    self.raise(StepResult::Failure);
                }
            }
            StepResult::Failure => {
                // The manual: warnOnWarnings and flunkOnWarnings apply to "a WARNINGS
                // or FAILURE of this build step", the *OnFailure flags to a FAILURE.
                if flags.warn_on_failure || flags.warn_on_warnings {
                    self.raise(StepResult::Warnings);
                }
                if flags.flunk_on_failure || flags.flunk_on_warnings {
                    self.raise(StepResult::Failure);
                }
                if flags.halt_on_failure {
                    self.raise(StepResult::Failure);
                    self.halted = true;
                }
            }
            StepResult::Exception => {
                self.raise(StepResult::Exception);
                self.halted = true;
            }
        }
        !self.halted
    }

    /// Never lowers the result: a FAILURE stays a FAILURE whatever warns later.
    fn raise(&mut self, to: StepResult) {
        self.result = self.result.max(to);
    }

    /// The build's result so far (its final result once the last step is done).
    pub fn result(&self) -> StepResult {
        self.result
    }

    /// Whether a step has stopped the build; the remaining steps do not run.
    pub fn halted(&self) -> bool {
        self.halted
    }
}

/// The result of a build whose steps ended with these results, and how many of
/// them ran before the build halted (the rest never start).
pub fn build_result<I>(steps: I) -> (StepResult, usize)
where
    I: IntoIterator<Item = (StepResult, StepFlags)>,
{
    let mut build = BuildResult::new();
    let mut ran = 0;
    for (result, flags) in steps {
        ran += 1;
        if !build.step_done(result, flags) {
            break;
        }
    }
    (build.result(), ran)
}

#[cfg(test)]
mod tests {
    use super::StepResult::*;
    use super::*;

    const NONE: StepFlags = StepFlags {
        halt_on_failure: false,
        flunk_on_failure: false,
        warn_on_failure: false,
        flunk_on_warnings: false,
        warn_on_warnings: false,
    };

    fn flags(f: impl FnOnce(&mut StepFlags)) -> StepFlags {
        let mut s = NONE;
        f(&mut s);
        s
    }

    fn one(result: StepResult, flags: StepFlags) -> (StepResult, bool) {
        let mut b = BuildResult::new();
        let go_on = b.step_done(result, flags);
        (b.result(), go_on)
    }

    #[test]
    fn names_round_trip_and_match_the_api() {
        for r in [Success, Warnings, Failure, Skipped, Exception] {
            assert_eq!(r.as_str().parse::<StepResult>().unwrap(), r);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
            let back: StepResult = serde_json::from_str(&format!("\"{r}\"")).unwrap();
            assert_eq!(back, r);
        }
        let e = "ok".parse::<StepResult>().unwrap_err();
        assert!(e.to_string().contains("\"ok\""));
    }

    #[test]
    fn rc_and_warnings_make_the_step_result() {
        assert_eq!(step_result_from_rc(0, 0), Success);
        assert_eq!(step_result_from_rc(0, 3), Warnings);
        assert_eq!(step_result_from_rc(2, 0), Failure);
        assert_eq!(step_result_from_rc(-1, 5), Failure);
    }

    #[test]
    fn without_flags_a_step_result_does_not_touch_the_build() {
        // "only the flags described above have any effect on the build as a whole"
        for r in [Success, Warnings, Failure, Skipped] {
            assert_eq!(one(r, NONE), (Success, true), "{r}");
        }
    }

    #[test]
    fn halt_on_failure_ends_the_build_as_failure() {
        let halt = flags(|f| f.halt_on_failure = true);
        assert_eq!(one(Failure, halt), (Failure, false));
        // Even when the step would only warn otherwise.
        let halt_warn = flags(|f| {
            f.halt_on_failure = true;
            f.warn_on_failure = true;
        });
        assert_eq!(one(Failure, halt_warn), (Failure, false));
        // A halting step that merely warns does not halt.
        assert_eq!(one(Warnings, halt), (Success, true));
        assert_eq!(one(Success, halt), (Success, true));
    }

    #[test]
    fn flunk_on_failure_marks_failure_and_goes_on() {
        let f = flags(|f| f.flunk_on_failure = true);
        assert_eq!(one(Failure, f), (Failure, true));
        assert_eq!(one(Warnings, f), (Success, true));
    }

    #[test]
    fn flunk_on_warnings_counts_warnings_and_failure() {
        let f = flags(|f| f.flunk_on_warnings = true);
        assert_eq!(one(Warnings, f), (Failure, true));
        assert_eq!(one(Failure, f), (Failure, true));
    }

    #[test]
    fn warn_on_failure_marks_warnings() {
        let f = flags(|f| f.warn_on_failure = true);
        assert_eq!(one(Failure, f), (Warnings, true));
        assert_eq!(one(Warnings, f), (Success, true));
    }

    #[test]
    fn warn_on_warnings_counts_warnings_and_failure() {
        let f = flags(|f| f.warn_on_warnings = true);
        assert_eq!(one(Warnings, f), (Warnings, true));
        assert_eq!(one(Failure, f), (Warnings, true));
    }

    #[test]
    fn flunk_beats_warn_on_the_same_step() {
        let f = flags(|f| {
            f.warn_on_failure = true;
            f.flunk_on_failure = true;
        });
        assert_eq!(one(Failure, f), (Failure, true));
    }

    #[test]
    fn a_later_warning_never_lowers_a_failure() {
        let (r, ran) = build_result([
            (Failure, StepFlags::SHELL),
            (Failure, StepFlags::TEST),
            (Warnings, flags(|f| f.warn_on_warnings = true)),
            (Success, StepFlags::SHELL),
        ]);
        assert_eq!((r, ran), (Failure, 4));
    }

    #[test]
    fn exception_halts_and_wins() {
        assert_eq!(one(Exception, NONE), (Exception, false));
        let mut b = BuildResult::new();
        assert!(b.step_done(Failure, StepFlags::SHELL));
        assert!(!b.step_done(Exception, NONE));
        assert_eq!(b.result(), Exception);
        assert!(b.halted());
    }

    #[test]
    fn skipped_is_neutral_whatever_the_flags() {
        let all = StepFlags {
            halt_on_failure: true,
            flunk_on_failure: true,
            warn_on_failure: true,
            flunk_on_warnings: true,
            warn_on_warnings: true,
        };
        assert_eq!(one(Skipped, all), (Success, true));
    }

    #[test]
    fn factory_flag_sets_behave_as_the_manual_says() {
        // A failing test flunks (Buildbot's Test inherits ShellCommand's
        // flunkOnFailure); the build goes on.
        assert_eq!(
            build_result([
                (Success, StepFlags::HALT),
                (Success, StepFlags::HALT),
                (Failure, StepFlags::TEST),
                (Success, StepFlags::SHELL),
            ]),
            (Failure, 4)
        );
        // A failing checkout/compile halts: later steps never run.
        assert_eq!(
            build_result([
                (Success, StepFlags::HALT),
                (Failure, StepFlags::HALT),
                (Success, StepFlags::TEST),
            ]),
            (Failure, 2)
        );
        // A failing plain shell step flunks but the build goes on.
        assert_eq!(
            build_result([(Failure, StepFlags::SHELL), (Success, StepFlags::SHELL)]),
            (Failure, 2)
        );
        assert_eq!(build_result([]), (Success, 0));
    }
}
