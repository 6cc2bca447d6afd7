//! Exact sample values: fixed-point decimals with six fractional digits.
//!
//! Counter arithmetic must be exact so that a burn rate sitting exactly on
//! its factor never fires because of float rounding. Values are read from
//! their decimal text (a JSON number is first turned into its shortest
//! round-trip text) and held as integer millionths.

use std::fmt;

/// Millionths per unit.
pub const SCALE: i64 = 1_000_000;
/// Largest accepted magnitude, in units (about 9.2 million million).
pub const MAX_UNITS: i64 = i64::MAX / SCALE;

/// A sample value in millionths of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fixed(pub i64);

/// Why a sample value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value {0:?} is not a decimal number")]
    NotANumber(String),
    #[error("value {0:?} is not finite")]
    NotFinite(String),
    #[error("value {0:?} is out of range (|v| <= {MAX_UNITS})")]
    OutOfRange(String),
    #[error("value {1} of counter {0} is negative; a counter never goes below zero")]
    NegativeCounter(String, Fixed),
}

/// Refuses a negative value for a series whose name marks it as a counter
/// (`_total`, `_count`, `_bucket`): read as a counter reset, it would make
/// the next sample count whole as new events.
pub fn check_counter(name: &str, v: Fixed) -> Result<(), ValueError> {
    if v.0 < 0
        && ["_total", "_count", "_bucket"]
            .iter()
            .any(|s| name.ends_with(s))
    {
        return Err(ValueError::NegativeCounter(name.to_string(), v));
    }
    Ok(())
}

impl Fixed {
    /// Parses decimal text such as `1234`, `-0.5`, `1.5e3`. Digits past the
    /// sixth decimal are truncated toward zero.
    pub fn parse(s: &str) -> Result<Fixed, ValueError> {
        let t = s.trim();
        let unsigned = t.trim_start_matches(['+', '-']);
        if ["nan", "inf", "infinity"]
            .iter()
            .any(|w| unsigned.eq_ignore_ascii_case(w))
        {
            return Err(ValueError::NotFinite(s.to_string()));
        }
        parse_decimal(t).ok_or_else(|| {
            if t.bytes().any(|c| c.is_ascii_digit()) && valid_shape(t) {
                ValueError::OutOfRange(s.to_string())
            } else {
                ValueError::NotANumber(s.to_string())
            }
        })
    }

    /// Converts a JSON/Avro float through its shortest round-trip text, so
    /// `0.1` stays exactly one tenth.
    pub fn from_f64(v: f64) -> Result<Fixed, ValueError> {
        if !v.is_finite() {
            return Err(ValueError::NotFinite(v.to_string()));
        }
        Fixed::parse(&v.to_string())
    }

    pub fn from_units(n: i64) -> Fixed {
        Fixed(n * SCALE)
    }

    pub fn to_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        let (int, frac) = (a / SCALE as u64, a % SCALE as u64);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let s = format!("{frac:06}");
            write!(f, "{sign}{int}.{}", s.trim_end_matches('0'))
        }
    }
}

fn valid_shape(t: &str) -> bool {
    t.bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'))
}

fn parse_decimal(t: &str) -> Option<Fixed> {
    let b = t.as_bytes();
    let mut i = 0;
    let neg = match b.first()? {
        b'-' => {
            i += 1;
            true
        }
        b'+' => {
            i += 1;
            false
        }
        _ => false,
    };
    // Collect significant digits and the position of the decimal point.
    let mut mant: i128 = 0;
    let mut scale10: i32 = 0; // value = mant * 10^scale10
    let mut any = false;
    let mut seen_dot = false;
    while i < b.len() {
        match b[i] {
            c @ b'0'..=b'9' => {
                any = true;
                if mant < 10i128.pow(30) {
                    mant = mant * 10 + i128::from(c - b'0');
                    if seen_dot {
                        scale10 -= 1;
                    }
                } else if !seen_dot {
                    scale10 += 1;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            b'e' | b'E' => break,
            _ => return None,
        }
        i += 1;
    }
    if !any {
        return None;
    }
    if i < b.len() {
        // exponent
        i += 1;
        let exp: i32 = std::str::from_utf8(&b[i..]).ok()?.parse().ok()?;
        if !(-400..=400).contains(&exp) {
            return if exp < 0 { Some(Fixed(0)) } else { None };
        }
        scale10 += exp;
    }
    // Convert mant * 10^scale10 to millionths, truncating.
    let shift = scale10 + 6;
    let micro: i128 = if shift >= 0 {
        if shift > 30 {
            if mant == 0 {
                0
            } else {
                return None;
            }
        } else {
            mant.checked_mul(10i128.pow(shift as u32))?
        }
    } else if shift < -38 {
        0
    } else {
        mant / 10i128.pow((-shift) as u32)
    };
    let v = if neg { -micro } else { micro };
    i64::try_from(v).ok().map(Fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(Fixed::parse("1234").unwrap(), Fixed(1_234_000_000));
        assert_eq!(Fixed::parse("0.1").unwrap(), Fixed(100_000));
        assert_eq!(Fixed::parse("-2.5").unwrap(), Fixed(-2_500_000));
        assert_eq!(Fixed::parse("1.5e3").unwrap(), Fixed(1_500_000_000));
        assert_eq!(Fixed::parse("1e-7").unwrap(), Fixed(0));
        assert_eq!(Fixed::from_f64(0.1).unwrap(), Fixed(100_000));
        assert_eq!(Fixed::from_f64(3.0).unwrap(), Fixed(3_000_000));
    }

    #[test]
    fn refuses_non_finite_and_garbage() {
        assert!(matches!(Fixed::parse("NaN"), Err(ValueError::NotFinite(_))));
        assert!(matches!(
            Fixed::parse("+Inf"),
            Err(ValueError::NotFinite(_))
        ));
        assert!(matches!(
            Fixed::parse("12a"),
            Err(ValueError::NotANumber(_))
        ));
        assert!(matches!(Fixed::parse(""), Err(ValueError::NotANumber(_))));
        assert!(matches!(
            Fixed::parse("1e300"),
            Err(ValueError::OutOfRange(_))
        ));
        assert!(Fixed::from_f64(f64::NAN).is_err());
    }

    #[test]
    fn displays_shortest() {
        assert_eq!(Fixed(1_500_000).to_string(), "1.5");
        assert_eq!(Fixed(-3_000_000).to_string(), "-3");
        assert_eq!(Fixed(1).to_string(), "0.000001");
    }
}
