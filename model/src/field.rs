//! What a column is: its type as the API carries it, who may set it, and
//! what it means.

/// How a field is stored and carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `serial` primary key.
    Id,
    /// `integer`.
    Int,
    /// `bigint`.
    BigInt,
    /// `varchar(n)` (`Some(n)`, counted in characters as PostgreSQL does) or `text`.
    Text(Option<usize>),
    /// `varchar` restricted to a list of values.
    Enum(&'static [&'static str]),
    /// `jsonb`.
    Json,
    /// `numeric(3,2)` between 0 and 5, carried as a decimal string ("4.50")
    /// so that no client turns it into a float.
    Score,
    /// `timestamptz`, carried as RFC 3339 in UTC.
    Timestamp,
}

/// Who may set a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Computed by the database; never accepted.
    ReadOnly,
    /// Set by the database normally; the bulk import may carry it over.
    Imported,
    /// May be given on create and changed.
    Optional,
    /// Must be given on create; may be changed.
    Required,
}

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The JSON member, which is also the column's name in the agent's mirror.
    pub name: &'static str,
    /// The PostgreSQL column.
    pub column: &'static str,
    pub kind: Kind,
    pub nullable: bool,
    pub access: Access,
    /// The table whose `id` this field holds, if it is a reference.
    pub references: Option<&'static str>,
    /// What it means, for the API's description.
    pub doc: &'static str,
}

impl Field {
    /// A field whose JSON member and column share `name`.
    pub const fn new(
        name: &'static str,
        kind: Kind,
        nullable: bool,
        access: Access,
        doc: &'static str,
    ) -> Field {
        Field {
            name,
            column: name,
            kind,
            nullable,
            access,
            references: None,
            doc,
        }
    }

    /// The same field stored in another PostgreSQL column.
    pub const fn in_column(self, column: &'static str) -> Field {
        Field { column, ..self }
    }

    /// The same field as a reference to `table`'s `id`.
    pub const fn references(self, table: &'static str) -> Field {
        Field {
            references: Some(table),
            ..self
        }
    }

    /// Whether a write may set it (create, update or import).
    pub fn writable(&self) -> bool {
        self.access != Access::ReadOnly
    }
}
