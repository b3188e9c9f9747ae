//! The change feed as the agent reads it: the wire format (declared with
//! the content model, which the server shares) and the exact score.

pub use content_model::feed::{Change, ChangePage, Op, Phase};

/// A NUMERIC(3,2) score kept exactly: the text the server sent and its value
/// in hundredths. A float would turn "4.35" into 4.3499999…
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Score {
    pub text: String,
    pub hundredths: i64,
}

impl Score {
    /// Parses a plain decimal (`4`, `4.5`, `4.50`, `-0.25`) with at most
    /// two fractional digits.
    pub fn parse(text: &str) -> Option<Score> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = match digits.split_once('.') {
            Some((_, "")) => return None,
            Some(parts) => parts,
            None => (digits, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty()
            || int.len() > 15
            || frac.len() > 2
            || !all_digits(int)
            || !all_digits(frac)
        {
            return None;
        }
        let mut hundredths: i64 = int.parse().ok()?;
        hundredths = hundredths * 100 + format!("{frac:0<2}").parse::<i64>().ok()?;
        Some(Score {
            text: text.to_owned(),
            hundredths: if negative { -hundredths } else { hundredths },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_parse_exactly() {
        assert_eq!(Score::parse("4.50").unwrap().hundredths, 450);
        assert_eq!(Score::parse("4.5").unwrap().hundredths, 450);
        assert_eq!(Score::parse("4.35").unwrap().hundredths, 435);
        assert_eq!(Score::parse("0").unwrap().hundredths, 0);
        assert_eq!(Score::parse("-0.25").unwrap().hundredths, -25);
        assert_eq!(Score::parse("4.50").unwrap().text, "4.50");
        for bad in ["", ".5", "4.505", "4,5", "1e2", "abc", "4.", "-"] {
            assert!(Score::parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}
