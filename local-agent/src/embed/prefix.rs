//! The texts some models expect before what they embed.
//!
//! Models of the e5 family (multilingual-e5-small/base/large, e5-*-v2) were
//! trained with `query: ` before questions and `passage: ` before the texts
//! searched; without them their vectors rank noticeably worse. Other models
//! want nothing, or a prefix of their own that the settings give.

use std::borrow::Cow;

use super::Purpose;

/// What goes before a text, by what it is embedded for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prefixes {
    pub query: String,
    pub passage: String,
}

impl Prefixes {
    /// The prefixes a model of a known family expects (e5: `query: ` /
    /// `passage: `), else none. The family is read from the model's name as
    /// the hub, Ollama or an OpenAI-compatible server spell it
    /// (`intfloat/multilingual-e5-small`, `multilingual-e5-small`,
    /// `e5-base-v2`, `jeffh/intfloat-multilingual-e5-large:f16`).
    pub fn for_model(model: &str) -> Prefixes {
        if is_e5(model) {
            Prefixes {
                query: "query: ".to_owned(),
                passage: "passage: ".to_owned(),
            }
        } else {
            Prefixes::default()
        }
    }

    /// `text` with the prefix for `purpose` before it (borrowed when there
    /// is none).
    pub fn apply<'a>(&self, purpose: Purpose, text: &'a str) -> Cow<'a, str> {
        let prefix = match purpose {
            Purpose::Query => &self.query,
            Purpose::Passage => &self.passage,
        };
        if prefix.is_empty() {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(format!("{prefix}{text}"))
        }
    }

    /// Whether neither purpose gets a prefix.
    pub fn is_empty(&self) -> bool {
        self.query.is_empty() && self.passage.is_empty()
    }
}

/// Whether a model name names an e5 model: the last path segment (after a
/// hub owner or Ollama namespace, before an Ollama tag) is `e5-…` or
/// contains `-e5-` / ends with `-e5`.
fn is_e5(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    let name = name.split(':').next().unwrap_or(name).to_ascii_lowercase();
    name.starts_with("e5-") || name == "e5" || name.contains("-e5-") || name.ends_with("-e5")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e5_models_get_query_and_passage_prefixes_under_any_spelling() {
        for name in [
            "intfloat/multilingual-e5-small",
            "multilingual-e5-small",
            "e5-base-v2",
            "intfloat/e5-large-v2",
            "jeffh/intfloat-multilingual-e5-large:f16",
            "Multilingual-E5-Base",
        ] {
            let p = Prefixes::for_model(name);
            assert_eq!(p.query, "query: ", "{name}");
            assert_eq!(p.passage, "passage: ", "{name}");
        }
        let p = Prefixes::for_model("multilingual-e5-small");
        assert_eq!(p.apply(Purpose::Query, "ห้องน้ำ"), "query: ห้องน้ำ");
        assert_eq!(p.apply(Purpose::Passage, "ห้องน้ำ"), "passage: ห้องน้ำ");
    }

    #[test]
    fn other_models_get_none_and_the_text_is_borrowed() {
        for name in [
            "all-minilm",
            "all-MiniLM-L6-v2",
            "bge-m3",
            "paraphrase-multilingual",
            "text-embedding-3-small",
            "hashed-ngrams-v1",
            "granite-embedding:278m",
        ] {
            let p = Prefixes::for_model(name);
            assert!(p.is_empty(), "{name}: {p:?}");
            assert!(matches!(p.apply(Purpose::Query, "x"), Cow::Borrowed("x")));
        }
    }
}
