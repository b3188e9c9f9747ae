//! Conversions between PostgreSQL values (as `tokio-postgres` decodes them)
//! and the `spin:postgres@4.0.0` types, chosen to give a component exactly
//! what Spin gives it. The choices are Spin's, and some are surprising:
//!
//! - TIMESTAMP and TIMESTAMPTZ both report the `datetime` column type, but
//!   values are read as a naive date-time, which `tokio-postgres` refuses
//!   for TIMESTAMPTZ: any TIMESTAMPTZ column fails the whole query. SQL must
//!   hand such columns over as `col AT TIME ZONE 'UTC'` or `col::text`.
//! - JSONB is decoded and re-serialised: keys sorted, whitespace dropped,
//!   numbers through `f64` (`1.50` comes back as `1.5`).
//! - NUMERIC becomes decimal text with its scale kept (`1.50` stays `1.50`);
//!   NaN, infinities and values beyond 28 significant digits fail the query.
//! - Types without a mapping (plain JSON among them) report `other(name)`
//!   and their raw binary wire bytes as `unsupported`.

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use postgres_range::{BoundSided, BoundType, Normalizable, Range, RangeBound};
use rust_decimal::Decimal;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::bindings::spin::postgres::postgres::{
    DbDataType, DbValue, Interval, ParameterValue, RangeBoundKind,
};

type BoxError = Box<dyn StdError + Sync + Send>;

/// A value that cannot be converted between the component and the database.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    #[error("invalid date y={0}, m={1}, d={2}")]
    Date(i32, u8, u8),
    #[error("invalid time {0}:{1}:{2}:{3}")]
    Time(u8, u8, u8, u32),
    #[error("invalid epoch timestamp {0}")]
    Timestamp(i64),
    #[error("invalid UUID {0}")]
    Uuid(String, #[source] uuid::Error),
    #[error("invalid decimal {0}")]
    Decimal(String, #[source] rust_decimal::Error),
    #[error("invalid JSON {0}")]
    Json(String, #[source] serde_json::Error),
    /// A column the driver could not decode, in the words Spin's driver
    /// uses: `error deserializing column N: <cause>`, the cause again as
    /// the source.
    #[error("{message}: {cause}")]
    Column {
        message: String,
        #[source]
        cause: BoxError,
    },
    #[error("{0}")]
    Driver(String),
}

impl From<tokio_postgres::Error> for ConversionError {
    fn from(e: tokio_postgres::Error) -> Self {
        // Spin's tokio-postgres (0.7.12) writes the cause after the
        // message; later versions leave it to the source.
        let text = e.to_string();
        match e.into_source() {
            Some(cause) => {
                let message = text
                    .strip_suffix(&format!(": {cause}"))
                    .unwrap_or(&text)
                    .to_owned();
                ConversionError::Column { message, cause }
            }
            None => ConversionError::Driver(text),
        }
    }
}

/// The column type a component is told about.
pub fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::BYTEA => DbDataType::Binary,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbDataType::Str,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_RANGE => DbDataType::RangeInt32,
        Type::INT8_RANGE => DbDataType::RangeInt64,
        Type::NUM_RANGE => DbDataType::RangeDecimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        _ => DbDataType::Other(ty.name().to_owned()),
    }
}

fn get<'a, T: FromSql<'a>>(
    row: &'a Row,
    index: usize,
    wrap: impl FnOnce(T) -> Result<DbValue, ConversionError>,
) -> Result<DbValue, ConversionError> {
    match row.try_get::<_, Option<T>>(index)? {
        Some(v) => wrap(v),
        None => Ok(DbValue::DbNull),
    }
}

/// Reads column `index` of a row as the value a component receives.
pub fn value(row: &Row, index: usize) -> Result<DbValue, ConversionError> {
    let ty = row.columns()[index].type_();
    match *ty {
        Type::BOOL => get(row, index, |v| Ok(DbValue::Boolean(v))),
        Type::BYTEA => get(row, index, |v| Ok(DbValue::Binary(v))),
        Type::FLOAT4 => get(row, index, |v| Ok(DbValue::Floating32(v))),
        Type::FLOAT8 => get(row, index, |v| Ok(DbValue::Floating64(v))),
        Type::INT2 => get(row, index, |v| Ok(DbValue::Int16(v))),
        Type::INT4 => get(row, index, |v| Ok(DbValue::Int32(v))),
        Type::INT8 => get(row, index, |v| Ok(DbValue::Int64(v))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => get(row, index, |v| Ok(DbValue::Str(v))),
        // Read as a naive date-time for both: TIMESTAMPTZ fails here, as in Spin.
        Type::TIMESTAMP | Type::TIMESTAMPTZ => get(row, index, |v: NaiveDateTime| {
            Ok(DbValue::Datetime(datetime_to_wit(v)))
        }),
        Type::DATE => get(row, index, |v: NaiveDate| Ok(DbValue::Date(date_to_wit(v)))),
        Type::TIME => get(row, index, |v: NaiveTime| Ok(DbValue::Time(time_to_wit(v)))),
        Type::UUID => get(row, index, |v: uuid::Uuid| Ok(DbValue::Uuid(v.to_string()))),
        Type::JSONB => get(row, index, |v: serde_json::Value| {
            Ok(DbValue::Jsonb(jsonb_text(&v).into_bytes()))
        }),
        Type::NUMERIC => get(row, index, |v: Decimal| Ok(DbValue::Decimal(v.to_string()))),
        Type::INT4_RANGE => get(row, index, |v: Range<i32>| {
            Ok(DbValue::RangeInt32(range_to_wit(&v, |x| *x)))
        }),
        Type::INT8_RANGE => get(row, index, |v: Range<i64>| {
            Ok(DbValue::RangeInt64(range_to_wit(&v, |x| *x)))
        }),
        Type::NUM_RANGE => get(row, index, |v: Range<RangeDecimal>| {
            Ok(DbValue::RangeDecimal(range_to_wit(&v, |d| d.0.to_string())))
        }),
        Type::INT4_ARRAY => get(row, index, |v| Ok(DbValue::ArrayInt32(v))),
        Type::INT8_ARRAY => get(row, index, |v| Ok(DbValue::ArrayInt64(v))),
        Type::NUMERIC_ARRAY => get(row, index, |v: Vec<Option<Decimal>>| {
            Ok(DbValue::ArrayDecimal(
                v.into_iter().map(|d| d.map(|d| d.to_string())).collect(),
            ))
        }),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => {
            get(row, index, |v| Ok(DbValue::ArrayStr(v)))
        }
        Type::INTERVAL => get(row, index, |v: PgInterval| Ok(DbValue::Interval(v.0))),
        _ => get(row, index, |v: RawBytes| Ok(DbValue::Unsupported(v.0))),
    }
}

/// JSON text as Spin re-serialises a JSONB value: no whitespace, object
/// keys in byte order, and numbers as `serde_json` prints them after reading
/// them as `u64`, `i64` or else `f64` (`1.50` → `1.5`, `1e3` → `1000.0`).
///
/// Written out here rather than left to `serde_json::to_vec`, whose output
/// changes with crate features that any crate in a build can switch on
/// (`preserve_order` keeps key order, `arbitrary_precision` keeps digits).
pub fn jsonb_text(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&json_number(&n.to_string())),
        Value::String(s) => out.push_str(&serde_json::to_string(s).expect("strings serialise")),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("strings serialise"));
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
    }
}

/// A JSON number's text, normalised the way a plain `serde_json` reads and
/// writes it.
fn json_number(text: &str) -> String {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(u) = text.parse::<u64>() {
            return u.to_string();
        }
        if let Ok(i) = text.parse::<i64>() {
            return i.to_string();
        }
    }
    match text
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
    {
        Some(n) => n.to_string(),
        // Not finite: serde_json writes such values as null.
        None => "null".to_owned(),
    }
}

/// The bytes a value counts toward the result-size cap, as Spin counts them.
pub fn memory_size(v: &DbValue) -> usize {
    let base = std::mem::size_of::<DbValue>();
    match v {
        DbValue::ArrayInt32(a) => base + a.len() * std::mem::size_of::<Option<i32>>(),
        DbValue::ArrayInt64(a) => base + a.len() * std::mem::size_of::<Option<i64>>(),
        DbValue::ArrayDecimal(a) | DbValue::ArrayStr(a) => {
            base + a
                .iter()
                .map(|s| std::mem::size_of::<Option<String>>() + s.as_ref().map_or(0, String::len))
                .sum::<usize>()
        }
        DbValue::Str(s) | DbValue::Uuid(s) | DbValue::Decimal(s) => base + s.len(),
        DbValue::Jsonb(b) | DbValue::Binary(b) | DbValue::Unsupported(b) => base + b.len(),
        _ => base,
    }
}

/// A parameter ready for `tokio-postgres`.
pub type SqlParam = Box<dyn ToSql + Send + Sync>;

/// Converts a component's parameter. The Rust type chosen decides which
/// column types the server accepts (e.g. `datetime` binds only to TIMESTAMP,
/// `timestamp` only to TIMESTAMPTZ, `int8` only to the one-byte `"char"`).
pub fn parameter(p: &ParameterValue) -> Result<SqlParam, ConversionError> {
    Ok(match p {
        ParameterValue::Boolean(v) => Box::new(*v),
        ParameterValue::Int8(v) => Box::new(*v),
        ParameterValue::Int16(v) => Box::new(*v),
        ParameterValue::Int32(v) => Box::new(*v),
        ParameterValue::Int64(v) => Box::new(*v),
        ParameterValue::Floating32(v) => Box::new(*v),
        ParameterValue::Floating64(v) => Box::new(*v),
        ParameterValue::Str(v) => Box::new(v.clone()),
        ParameterValue::Binary(v) => Box::new(v.clone()),
        ParameterValue::Date(v) => Box::new(date_from_wit(*v)?),
        ParameterValue::Time(v) => Box::new(time_from_wit(*v)?),
        ParameterValue::Datetime(v) => Box::new(datetime_from_wit(*v)?),
        ParameterValue::Timestamp(v) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(*v, 0)
                .ok_or(ConversionError::Timestamp(*v))?,
        ),
        ParameterValue::Uuid(v) => {
            Box::new(uuid::Uuid::parse_str(v).map_err(|e| ConversionError::Uuid(v.clone(), e))?)
        }
        ParameterValue::Jsonb(v) => Box::new(json_parameter(v)?),
        ParameterValue::Decimal(v) => Box::new(decimal_from_wit(v)?),
        ParameterValue::RangeInt32(v) => Box::new(range_from_wit(v, |x| Ok(*x))?),
        ParameterValue::RangeInt64(v) => Box::new(range_from_wit(v, |x| Ok(*x))?),
        ParameterValue::RangeDecimal(v) => Box::new(range_from_wit(v, |s| {
            decimal_from_wit(s).map(RangeDecimal)
        })?),
        ParameterValue::ArrayInt32(v) => Box::new(v.clone()),
        ParameterValue::ArrayInt64(v) => Box::new(v.clone()),
        ParameterValue::ArrayDecimal(v) => Box::new(
            v.iter()
                .map(|s| s.as_deref().map(decimal_from_wit).transpose())
                .collect::<Result<Vec<_>, _>>()?,
        ),
        ParameterValue::ArrayStr(v) => Box::new(v.clone()),
        ParameterValue::Interval(v) => Box::new(PgInterval(*v)),
        ParameterValue::DbNull => Box::new(Null),
    })
}

/// Exact decimal parsing: text with more precision than `Decimal` holds is
/// refused rather than rounded.
fn decimal_from_wit(s: &str) -> Result<Decimal, ConversionError> {
    Decimal::from_str_exact(s).map_err(|e| ConversionError::Decimal(s.to_owned(), e))
}

/// A JSON parameter as Spin binds it: parsed into a value and written out
/// again, so keys come sorted and numbers pass through `f64` (`1.50` is
/// bound as `1.5`) whatever the component sent.
fn json_parameter(bytes: &[u8]) -> Result<serde_json::Value, ConversionError> {
    let invalid = |e| ConversionError::Json(String::from_utf8_lossy(bytes).into_owned(), e);
    let parsed: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
    serde_json::from_str(&jsonb_text(&parsed)).map_err(invalid)
}

fn datetime_to_wit(v: NaiveDateTime) -> (i32, u8, u8, u8, u8, u8, u32) {
    // Month, day, hour, minute and second always fit in a u8.
    (
        v.year(),
        v.month() as u8,
        v.day() as u8,
        v.hour() as u8,
        v.minute() as u8,
        v.second() as u8,
        v.nanosecond(),
    )
}

fn date_to_wit(v: NaiveDate) -> (i32, u8, u8) {
    (v.year(), v.month() as u8, v.day() as u8)
}

fn time_to_wit(v: NaiveTime) -> (u8, u8, u8, u32) {
    (
        v.hour() as u8,
        v.minute() as u8,
        v.second() as u8,
        v.nanosecond(),
    )
}

fn date_from_wit((y, m, d): (i32, u8, u8)) -> Result<NaiveDate, ConversionError> {
    NaiveDate::from_ymd_opt(y, m.into(), d.into()).ok_or(ConversionError::Date(y, m, d))
}

fn time_from_wit((h, mi, s, ns): (u8, u8, u8, u32)) -> Result<NaiveTime, ConversionError> {
    NaiveTime::from_hms_nano_opt(h.into(), mi.into(), s.into(), ns)
        .ok_or(ConversionError::Time(h, mi, s, ns))
}

fn datetime_from_wit(
    (y, mo, d, h, mi, s, ns): (i32, u8, u8, u8, u8, u8, u32),
) -> Result<NaiveDateTime, ConversionError> {
    Ok(NaiveDateTime::new(
        date_from_wit((y, mo, d))?,
        time_from_wit((h, mi, s, ns))?,
    ))
}

type WitBound<T> = Option<(T, RangeBoundKind)>;

fn kind_to_wit(t: BoundType) -> RangeBoundKind {
    match t {
        BoundType::Inclusive => RangeBoundKind::Inclusive,
        BoundType::Exclusive => RangeBoundKind::Exclusive,
    }
}

fn kind_from_wit(k: RangeBoundKind) -> BoundType {
    match k {
        RangeBoundKind::Inclusive => BoundType::Inclusive,
        RangeBoundKind::Exclusive => BoundType::Exclusive,
    }
}

fn range_to_wit<T: PartialOrd + Normalizable, W>(
    r: &Range<T>,
    f: impl Fn(&T) -> W,
) -> (WitBound<W>, WitBound<W>) {
    fn bound<S: BoundSided, T, W>(
        b: &RangeBound<S, T>,
        f: &impl Fn(&T) -> W,
    ) -> (W, RangeBoundKind) {
        (f(&b.value), kind_to_wit(b.type_))
    }
    (
        r.lower().map(|b| bound(b, &f)),
        r.upper().map(|b| bound(b, &f)),
    )
}

fn range_from_wit<W, T: PartialOrd + Normalizable>(
    (lower, upper): &(WitBound<W>, WitBound<W>),
    f: impl Fn(&W) -> Result<T, ConversionError>,
) -> Result<Range<T>, ConversionError> {
    let lower = lower
        .as_ref()
        .map(|(v, k)| f(v).map(|v| RangeBound::new(v, kind_from_wit(*k))))
        .transpose()?;
    let upper = upper
        .as_ref()
        .map(|(v, k)| f(v).map(|v| RangeBound::new(v, kind_from_wit(*k))))
        .transpose()?;
    Ok(Range::new(lower, upper))
}

/// A decimal usable as a range bound (numeric ranges are not normalised).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct RangeDecimal(pub Decimal);

impl Normalizable for RangeDecimal {
    fn normalize<S: BoundSided>(bound: RangeBound<S, Self>) -> RangeBound<S, Self> {
        bound
    }
}

impl ToSql for RangeDecimal {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        self.0.to_sql(ty, out)
    }
    fn accepts(ty: &Type) -> bool {
        <Decimal as ToSql>::accepts(ty)
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for RangeDecimal {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Decimal::from_sql(ty, raw).map(Self)
    }
    fn accepts(ty: &Type) -> bool {
        <Decimal as FromSql>::accepts(ty)
    }
}

/// INTERVAL on the wire: microseconds (i64), days (i32), months (i32).
#[derive(Debug, Clone, Copy)]
pub struct PgInterval(pub Interval);

impl ToSql for PgInterval {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_i64(self.0.micros);
        out.put_i32(self.0.days);
        out.put_i32(self.0.months);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgInterval {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let bytes: [u8; 16] = raw
            .try_into()
            .map_err(|_| "unexpected binary format for Postgres INTERVAL")?;
        let (micros, rest) = bytes.split_at(8);
        let (days, months) = rest.split_at(4);
        Ok(Self(Interval {
            micros: i64::from_be_bytes(micros.try_into().expect("8 bytes")),
            days: i32::from_be_bytes(days.try_into().expect("4 bytes")),
            months: i32::from_be_bytes(months.try_into().expect("4 bytes")),
        }))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// Any value's wire bytes, for types without a mapping.
struct RawBytes(Vec<u8>);

impl<'a> FromSql<'a> for RawBytes {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Self(raw.to_vec()))
    }
    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// SQL NULL that binds to a parameter of any type (a typed `None` would be
/// refused by columns of other types).
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(&self, _ty: &Type, _out: &mut BytesMut) -> Result<IsNull, BoxError> {
        Ok(IsNull::Yes)
    }
    fn accepts(_ty: &Type) -> bool {
        true
    }
    fn to_sql_checked(&self, _ty: &Type, _out: &mut BytesMut) -> Result<IsNull, BoxError> {
        Ok(IsNull::Yes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_wire(p: &ParameterValue, ty: &Type) -> Result<Option<Vec<u8>>, String> {
        let param = parameter(p).map_err(|e| e.to_string())?;
        let mut out = BytesMut::new();
        match param
            .to_sql_checked(ty, &mut out)
            .map_err(|e| e.to_string())?
        {
            IsNull::Yes => Ok(None),
            IsNull::No => Ok(Some(out.to_vec())),
        }
    }

    fn from_wire<'a, T: FromSql<'a>>(ty: &Type, raw: &'a [u8]) -> T {
        T::from_sql(ty, raw).unwrap()
    }

    #[test]
    fn decimal_keeps_scale_both_ways() {
        let wire = to_wire(&ParameterValue::Decimal("1.50".into()), &Type::NUMERIC)
            .unwrap()
            .unwrap();
        let back: Decimal = from_wire(&Type::NUMERIC, &wire);
        assert_eq!(back.to_string(), "1.50");
        let wire = to_wire(&ParameterValue::Decimal("5.00".into()), &Type::NUMERIC)
            .unwrap()
            .unwrap();
        assert_eq!(
            from_wire::<Decimal>(&Type::NUMERIC, &wire).to_string(),
            "5.00"
        );
    }

    #[test]
    fn decimal_refuses_what_it_cannot_hold_exactly() {
        assert!(parameter(&ParameterValue::Decimal("abc".into())).is_err());
        assert!(parameter(&ParameterValue::Decimal("NaN".into())).is_err());
        assert!(
            parameter(&ParameterValue::Decimal(
                "1.00000000000000000000000000001".into()
            ))
            .is_err()
        );
    }

    #[test]
    fn numeric_nan_from_the_database_fails() {
        // NUMERIC NaN: ndigits 0, weight 0, sign 0xC000, dscale 0.
        let nan = [0u8, 0, 0, 0, 0xC0, 0, 0, 0];
        assert!(Decimal::from_sql(&Type::NUMERIC, &nan).is_err());
    }

    #[test]
    fn jsonb_is_reserialised_like_spin() {
        let text = |json: &str| jsonb_text(&serde_json::from_str(json).unwrap());
        assert_eq!(
            text(r#"{ "b": 1.50, "a": [1, "x\u00e9\n"], "B": null }"#),
            r#"{"B":null,"a":[1,"xé\n"],"b":1.5}"#
        );
        assert_eq!(
            text("[10, -5, 0.1, 1e3, 2.50, 18446744073709551615, -9223372036854775808]"),
            "[10,-5,0.1,1000.0,2.5,18446744073709551615,-9223372036854775808]"
        );
        assert_eq!(
            text(r#"{"น้ำ": true, "z": {"b": 1, "a": 2}}"#),
            r#"{"z":{"a":2,"b":1},"น้ำ":true}"#
        );
    }

    #[test]
    fn jsonb_parameter_must_be_json() {
        assert!(parameter(&ParameterValue::Jsonb(b"{nope".to_vec())).is_err());
        let wire = to_wire(&ParameterValue::Jsonb(br#"{"k":1}"#.to_vec()), &Type::JSONB)
            .unwrap()
            .unwrap();
        // JSONB binary format: version 1, then the text.
        assert_eq!(wire[0], 1);
    }

    #[test]
    fn datetime_binds_to_timestamp_but_not_timestamptz() {
        let p = ParameterValue::Datetime((2024, 2, 29, 23, 59, 58, 500_000_000));
        let wire = to_wire(&p, &Type::TIMESTAMP).unwrap().unwrap();
        let back: NaiveDateTime = from_wire(&Type::TIMESTAMP, &wire);
        assert_eq!(
            datetime_to_wit(back),
            (2024, 2, 29, 23, 59, 58, 500_000_000)
        );
        assert!(to_wire(&p, &Type::TIMESTAMPTZ).is_err());
        assert!(parameter(&ParameterValue::Datetime((2023, 2, 29, 0, 0, 0, 0))).is_err());
    }

    #[test]
    fn timestamp_is_seconds_since_epoch_into_timestamptz() {
        let p = ParameterValue::Timestamp(86_400);
        let wire = to_wire(&p, &Type::TIMESTAMPTZ).unwrap().unwrap();
        let back: chrono::DateTime<chrono::Utc> = from_wire(&Type::TIMESTAMPTZ, &wire);
        assert_eq!(back.to_rfc3339(), "1970-01-02T00:00:00+00:00");
        assert!(to_wire(&p, &Type::TIMESTAMP).is_err());
    }

    #[test]
    fn naive_datetime_cannot_read_timestamptz() {
        // This is the refusal behind "TIMESTAMPTZ fails the query".
        assert!(!<NaiveDateTime as FromSql>::accepts(&Type::TIMESTAMPTZ));
        assert_eq!(data_type(&Type::TIMESTAMPTZ), DbDataType::Datetime);
    }

    #[test]
    fn integers_bind_only_to_their_own_width() {
        assert!(to_wire(&ParameterValue::Int32(7), &Type::INT4).is_ok());
        assert!(to_wire(&ParameterValue::Int32(7), &Type::INT8).is_err());
        assert!(to_wire(&ParameterValue::Int64(7), &Type::INT8).is_ok());
        assert!(to_wire(&ParameterValue::Int8(7), &Type::INT2).is_err());
        assert!(to_wire(&ParameterValue::Int8(7), &Type::CHAR).is_ok());
    }

    #[test]
    fn null_binds_to_anything() {
        for ty in [Type::INT4, Type::TEXT, Type::JSONB, Type::BYTEA] {
            assert_eq!(to_wire(&ParameterValue::DbNull, &ty).unwrap(), None);
        }
    }

    #[test]
    fn strings_and_bytes() {
        let thai = "ภาษาไทย น้ำ";
        let wire = to_wire(&ParameterValue::Str(thai.into()), &Type::VARCHAR)
            .unwrap()
            .unwrap();
        assert_eq!(wire, thai.as_bytes());
        let bytes = vec![0u8, 255, 1];
        let wire = to_wire(&ParameterValue::Binary(bytes.clone()), &Type::BYTEA)
            .unwrap()
            .unwrap();
        assert_eq!(wire, bytes);
        assert!(to_wire(&ParameterValue::Str("x".into()), &Type::BYTEA).is_err());
    }

    #[test]
    fn uuid_parameter_is_validated() {
        assert!(parameter(&ParameterValue::Uuid("nope".into())).is_err());
        assert!(
            parameter(&ParameterValue::Uuid(
                "67e55044-10b1-426f-9247-bb680e5fe0c8".into()
            ))
            .is_ok()
        );
    }

    #[test]
    fn interval_round_trips() {
        let i = Interval {
            micros: -1,
            days: 2,
            months: 3,
        };
        let wire = to_wire(&ParameterValue::Interval(i), &Type::INTERVAL)
            .unwrap()
            .unwrap();
        assert_eq!(wire.len(), 16);
        let back: PgInterval = from_wire(&Type::INTERVAL, &wire);
        assert_eq!(back.0, i);
    }

    #[test]
    fn ranges_round_trip_with_bound_kinds() {
        let r = (
            Some(("1.5".to_owned(), RangeBoundKind::Inclusive)),
            Some(("2.25".to_owned(), RangeBoundKind::Exclusive)),
        );
        let wire = to_wire(&ParameterValue::RangeDecimal(r.clone()), &Type::NUM_RANGE)
            .unwrap()
            .unwrap();
        let back: Range<RangeDecimal> = from_wire(&Type::NUM_RANGE, &wire);
        assert_eq!(range_to_wit(&back, |d| d.0.to_string()), r);

        let unbounded = (None, Some((10, RangeBoundKind::Exclusive)));
        let wire = to_wire(&ParameterValue::RangeInt32(unbounded), &Type::INT4_RANGE)
            .unwrap()
            .unwrap();
        let back: Range<i32> = from_wire(&Type::INT4_RANGE, &wire);
        assert_eq!(range_to_wit(&back, |x| *x), unbounded);
    }

    #[test]
    fn unmapped_types_report_their_name() {
        assert_eq!(data_type(&Type::JSON), DbDataType::Other("json".into()));
        assert_eq!(data_type(&Type::INET), DbDataType::Other("inet".into()));
    }

    #[test]
    fn memory_size_counts_payloads() {
        let base = std::mem::size_of::<DbValue>();
        assert_eq!(memory_size(&DbValue::Int32(1)), base);
        assert_eq!(memory_size(&DbValue::Binary(vec![0; 10])), base + 10);
        assert_eq!(memory_size(&DbValue::Str("abc".into())), base + 3);
    }
}
