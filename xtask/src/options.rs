//! The options of xtask's long-running subcommands (`bench`, `nemesis`): walking `--name VALUE`
//! pairs, and whole-number options with a default and bounds. Parsing only: never runs anything.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use anyhow::{Context, Result, bail, ensure};

/// Walks a subcommand's options, each `--name VALUE` with `name` among `names`, handing them to
/// `set` in order. Returns `false` after printing `usage` for `--help`: the caller does not run.
pub(crate) fn parse_options(
    args: &[String],
    usage: &str,
    names: &[&str],
    mut set: impl FnMut(&str, &str) -> Result<()>,
) -> Result<bool> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{usage}");
                return Ok(false);
            }
            name if names.contains(&name) => {
                let value = args
                    .next()
                    .with_context(|| format!("{name} needs a value\n\n{usage}"))?;
                set(name, value)?;
            }
            other => bail!("unknown option `{other}`\n\n{usage}"),
        }
    }
    Ok(true)
}

/// A whole-number option: its name, what it is when not given, and the range it accepts. One
/// value per option, so each limit is named once, beside the option it bounds, and every
/// subcommand refuses a bad number with the same message.
///
/// `D` is the default's type: the number itself, or a list for an option that may be repeated.
#[derive(Clone, Debug)]
pub(crate) struct Bounded<T, D = T> {
    /// The option as typed, such as `--rounds`.
    pub(crate) name: &'static str,
    /// The value when the option is not given.
    pub(crate) default: D,
    /// The values accepted.
    pub(crate) range: RangeInclusive<T>,
}

impl<T: Copy, D> Bounded<T, D> {
    /// The option `name`, `default` unless given, accepting `range`.
    pub(crate) const fn new(name: &'static str, default: D, range: RangeInclusive<T>) -> Self {
        Bounded {
            name,
            default,
            range,
        }
    }

    /// The largest value accepted, for limits derived from it.
    pub(crate) const fn max(&self) -> T {
        *self.range.end()
    }
}

impl<T, D> Bounded<T, D>
where
    T: FromStr + PartialOrd + Display,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    /// `text` as a number within the range, or an error that names the option and its bounds.
    pub(crate) fn parse(&self, text: &str) -> Result<T> {
        let name = self.name;
        let value: T = text
            .trim()
            .parse()
            .with_context(|| format!("{name} `{text}` is not a number"))?;
        ensure!(
            self.range.contains(&value),
            "{name} must be between {} and {}",
            self.range.start(),
            self.range.end()
        );
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUNDS: Bounded<u32> = Bounded::new("--rounds", 10, 1..=1000);

    #[test]
    fn bounded_accepts_its_range_and_names_itself_otherwise() {
        assert_eq!(ROUNDS.parse("1").unwrap(), 1);
        assert_eq!(ROUNDS.parse(" 1000").unwrap(), 1000);
        let error = ROUNDS.parse("0").unwrap_err().to_string();
        assert_eq!(error, "--rounds must be between 1 and 1000");
        let error = ROUNDS.parse("many").unwrap_err().to_string();
        assert_eq!(error, "--rounds `many` is not a number");
        assert!(ROUNDS.parse("1001").is_err());
    }

    #[test]
    fn options_walk_in_order_and_stop_at_help() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut seen = Vec::new();
        let run = parse_options(
            &args(&["--a", "1", "--b", "2"]),
            "",
            &["--a", "--b"],
            |n, v| {
                seen.push(format!("{n}={v}"));
                Ok(())
            },
        );
        assert!(run.unwrap());
        assert_eq!(seen, ["--a=1", "--b=2"]);
        let run = parse_options(&args(&["--help", "--a"]), "", &["--a"], |_, _| Ok(()));
        assert!(!run.unwrap());
        assert!(parse_options(&args(&["--a"]), "", &["--a"], |_, _| Ok(())).is_err());
        assert!(parse_options(&args(&["--c", "1"]), "", &["--a"], |_, _| Ok(())).is_err());
    }
}
