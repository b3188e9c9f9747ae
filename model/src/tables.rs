//! The four content tables, as `migrations/` creates them.

use crate::field::{Access, Field, Kind};

/// A content table and its fields, in the order the API lists them.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub fields: &'static [Field],
}

impl Table {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn by_name(name: &str) -> Option<&'static Table> {
        ALL.iter().copied().find(|t| t.name == name)
    }
}

const ID: Field = Field::new(
    "id",
    Kind::Id,
    false,
    Access::Imported,
    "Assigned on create; kept by the import.",
);
const CREATED_AT: Field = Field::new(
    "created_at",
    Kind::Timestamp,
    true,
    Access::Imported,
    "When the row was created.",
);
const UPDATED_AT: Field = Field::new(
    "updated_at",
    Kind::Timestamp,
    true,
    Access::Imported,
    "When the row last changed.",
);

pub const LEARNING_CONTENT: Table = Table {
    name: "learning_content",
    fields: &[
        ID,
        Field::new(
            "title",
            Kind::Text(Some(200)),
            false,
            Access::Required,
            "Title, up to 200 characters.",
        ),
        Field::new(
            "content_type",
            Kind::Text(Some(50)),
            false,
            Access::Required,
            "What kind of content: phrase, dialogue, ...",
        ),
        Field::new(
            "language",
            Kind::Text(Some(10)),
            false,
            Access::Optional,
            "Language of the native text; default thai.",
        ),
        Field::new(
            "native_text",
            Kind::Text(None),
            false,
            Access::Required,
            "The text in the language learnt.",
        ),
        Field::new(
            "translation",
            Kind::Text(None),
            false,
            Access::Required,
            "Its translation.",
        ),
        Field::new(
            "ipa",
            Kind::Text(None),
            false,
            Access::Required,
            "Its pronunciation in IPA.",
        ),
        Field::new(
            "difficulty_level",
            Kind::Int,
            true,
            Access::Optional,
            "A difficulty grade.",
        ),
        Field::new(
            "tags",
            Kind::Json,
            true,
            Access::Optional,
            "JSON, usually an array of tag strings.",
        ),
        Field::new(
            "content_metadata",
            Kind::Json,
            true,
            Access::Optional,
            "Free-form JSON.",
        ),
        CREATED_AT,
        UPDATED_AT,
    ],
};

pub const CONTENT_FRAGMENTS: Table = Table {
    name: "content_fragments",
    fields: &[
        ID,
        Field::new(
            "learning_content_id",
            Kind::Int,
            true,
            Access::Optional,
            "The content this fragment belongs to.",
        )
        .references(LEARNING_CONTENT.name),
        Field::new(
            "native_text",
            Kind::Text(None),
            false,
            Access::Required,
            "The fragment in the language learnt.",
        ),
        Field::new(
            "body_text",
            Kind::Text(None),
            false,
            Access::Required,
            "Its meaning or explanation.",
        ),
        Field::new(
            "ipa",
            Kind::Text(None),
            true,
            Access::Optional,
            "Its pronunciation in IPA.",
        ),
        Field::new(
            "extra",
            Kind::Text(None),
            true,
            Access::Optional,
            "Anything else for the card.",
        ),
        Field::new(
            "fragment_type",
            Kind::Text(Some(50)),
            false,
            Access::Required,
            "word, phrase, sentence, ...",
        ),
        Field::new(
            "fragment_metadata",
            Kind::Json,
            true,
            Access::Optional,
            "Free-form JSON.",
        ),
        CREATED_AT,
        UPDATED_AT,
    ],
};

/// What `fragment_assets.asset_type` may be (a CHECK constraint).
pub const ASSET_TYPES: &[&str] = &["audio", "image", "video"];

/// An asset's row; its bytes (`asset_data`) travel apart, as a body of
/// their own, and are not a field.
pub const FRAGMENT_ASSETS: Table = Table {
    name: "fragment_assets",
    fields: &[
        ID,
        Field::new(
            "fragment_id",
            Kind::Int,
            true,
            Access::Optional,
            "The fragment this asset belongs to.",
        )
        .references(CONTENT_FRAGMENTS.name),
        Field::new(
            "asset_type",
            Kind::Enum(ASSET_TYPES),
            false,
            Access::Required,
            "audio, image or video.",
        ),
        Field::new(
            "asset_metadata",
            Kind::Json,
            true,
            Access::Optional,
            "Free-form JSON (voice, engine, ...).",
        ),
        Field::new(
            "content_type",
            Kind::Text(Some(100)),
            true,
            Access::ReadOnly,
            "The media type the bytes were uploaded with.",
        ),
        Field::new(
            "size",
            Kind::BigInt,
            false,
            Access::ReadOnly,
            "Size of the bytes.",
        )
        .in_column("asset_size"),
        Field::new(
            "sha256",
            Kind::Text(Some(64)),
            false,
            Access::ReadOnly,
            "SHA-256 of the bytes, hex; also the data's ETag.",
        )
        .in_column("asset_sha256"),
        Field::new(
            "created_by",
            Kind::Text(Some(100)),
            true,
            Access::Optional,
            "Who or what made it.",
        ),
        CREATED_AT,
    ],
};

pub const RANKINGS: Table = Table {
    name: "rankings",
    fields: &[
        ID,
        Field::new(
            "fragment_id",
            Kind::Int,
            true,
            Access::Optional,
            "The fragment judged.",
        )
        .references(CONTENT_FRAGMENTS.name),
        Field::new(
            "asset_id",
            Kind::Int,
            true,
            Access::Optional,
            "The asset judged.",
        )
        .references(FRAGMENT_ASSETS.name),
        Field::new(
            "rank_score",
            Kind::Score,
            true,
            Access::Optional,
            "0.00 to 5.00, two decimals, as a string.",
        ),
        Field::new(
            "assessed_by",
            Kind::Text(Some(100)),
            false,
            Access::Required,
            "Who judged.",
        ),
        Field::new(
            "assessment_notes",
            Kind::Text(None),
            true,
            Access::Optional,
            "Why.",
        ),
        CREATED_AT,
        UPDATED_AT,
    ],
};

/// The four tables in parent-before-child order.
pub static ALL: [&Table; 4] = [
    &LEARNING_CONTENT,
    &CONTENT_FRAGMENTS,
    &FRAGMENT_ASSETS,
    &RANKINGS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_point_at_earlier_tables() {
        for (i, table) in ALL.iter().enumerate() {
            assert_eq!(table.fields[0].kind, Kind::Id, "{}", table.name);
            for field in table.fields {
                if let Some(parent) = field.references {
                    let at = ALL.iter().position(|t| t.name == parent).unwrap();
                    assert!(at < i, "{}.{} refers forward", table.name, field.name);
                }
            }
        }
    }
}
