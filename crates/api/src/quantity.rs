//! Resource quantities (`500m`, `1.5`, `128Mi`, `1e3`) as Kubernetes reads them.
//!
//! The serialized form is `<sign><number><suffix>`: a decimal number, then a binary SI
//! suffix (`Ki` … `Ei`), a decimal SI suffix (`n`, `u`, `m`, none, `k`, `M` … `E`) or a
//! decimal exponent (`e3`, `E-2`). The value is kept exactly as a fraction
//! `mantissa × 10^exp10 × 2^exp2`; [`Quantity::milli_value`] and [`Quantity::value`] round
//! up, as `resource.Quantity`'s `MilliValue` and `Value` do (so `1n` CPU is 1m).

use std::fmt;

/// A parsed quantity. Values beyond ±2^63 saturate when converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// Why a string is not a quantity; the message is kube-apiserver's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError;

impl Quantity {
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(QuantityError);
        }
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        let mut mantissa: u128 = 0;
        let mut exp10: i32 = 0;
        for (i, c) in int.bytes().chain(frac.bytes()).enumerate() {
            let d = u128::from(c - b'0');
            if mantissa > u128::MAX / 100 {
                // Beyond any meaningful precision: keep the magnitude, drop digits.
                if i < int.len() {
                    exp10 += 1;
                }
                continue;
            }
            mantissa = mantissa * 10 + d;
            if i >= int.len() {
                exp10 -= 1;
            }
        }
        let (e10, e2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            s if s.starts_with(['e', 'E']) => {
                let e: i32 = s[1..].parse().map_err(|_| QuantityError)?;
                if !(-100..=100).contains(&e) {
                    return Err(QuantityError);
                }
                (e, 0)
            }
            _ => return Err(QuantityError),
        };
        Ok(Quantity {
            negative: negative && mantissa != 0,
            mantissa,
            exp10: exp10 + e10,
            exp2: e2,
        })
    }

    pub fn is_negative(&self) -> bool {
        self.negative
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The value scaled by 10^scale, rounded up (away from zero for positives, toward
    /// zero for negatives, as Kubernetes' `ScaledValue`).
    fn scaled(&self, scale: i32) -> i64 {
        let mut m = self.mantissa;
        let mut e = self.exp10 + scale;
        for _ in 0..self.exp2 {
            m = match m.checked_mul(2) {
                Some(v) => v,
                None => return self.saturate(),
            };
        }
        while e > 0 {
            m = match m.checked_mul(10) {
                Some(v) => v,
                None => return self.saturate(),
            };
            e -= 1;
        }
        let mut inexact = false;
        while e < 0 {
            if !m.is_multiple_of(10) {
                inexact = true;
            }
            m /= 10;
            e += 1;
            if m == 0 {
                break;
            }
        }
        if inexact && !self.negative {
            m += 1;
        }
        match i64::try_from(m) {
            Ok(v) if self.negative => -v,
            Ok(v) => v,
            Err(_) => self.saturate(),
        }
    }

    fn saturate(&self) -> i64 {
        if self.negative {
            i64::MIN
        } else {
            i64::MAX
        }
    }

    /// Thousandths of a unit, rounded up: CPU in millicores.
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }

    /// Whole units, rounded up: memory and storage in bytes, counts.
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.milli_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).expect(s)
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(q("500m").milli_value(), 500);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("0.1").milli_value(), 100);
        assert_eq!(q("1n").milli_value(), 1, "rounds up as MilliValue does");
        assert_eq!(q("250000u").milli_value(), 250);
        assert_eq!(q("2e3").value(), 2000);
        assert_eq!(q("1E-3").milli_value(), 1);
        assert_eq!(q("+4").value(), 4);
        assert_eq!(q(".5").milli_value(), 500);
    }

    #[test]
    fn memory_forms() {
        assert_eq!(q("128Mi").value(), 128 << 20);
        assert_eq!(q("16Gi").value(), 16 << 30);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1.5Ki").value(), 1536);
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("100").value(), 100);
    }

    #[test]
    fn negatives_and_limits() {
        assert!(q("-1").is_negative());
        assert_eq!(q("-500m").milli_value(), -500);
        assert!(!q("-0").is_negative());
        assert_eq!(q("9Ei").value(), i64::MAX, "saturates");
    }

    #[test]
    fn malformed_is_refused() {
        for bad in [
            "", "abc", "1.2.3", "1Qi", "m", "1 Mi", "--1", "1e", "1e1000", ".",
        ] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError), "{bad:?}");
        }
    }
}
