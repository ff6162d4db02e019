//! Query-time filters on item attributes: a small condition language, and an
//! [`AttributeTable`] (the attributes by column, parsed once) that answers "does row r match"
//! in a few comparisons, fast enough to run inside an ANN search for every visited node.
//!
//! A filter is a list of conditions, all of which must hold (AND). One condition:
//!
//! | text | holds when the attribute |
//! |---|---|
//! | `lang:en` | equals `en` (a number or boolean compares by its text: `in_stock:true`, `year:1995`); for a list attribute, has an element equal to it |
//! | `lang:en\|de` | equals one of the values |
//! | `genres~Comedy` | contains `Comedy`: a substring of a text attribute, or an element of a list |
//! | `year>=1990`, `year>1990`, `year<2000`, `year<=1999` | is a number in that range (text that parses as a number counts) |
//! | `!cond` | does not hold `cond` (an item without the attribute holds every negation) |
//!
//! A filter has at most [`MAX_CONDITIONS`] conditions, a condition at most [`MAX_ALTERNATIVES`]
//! alternatives, and a value at most [`MAX_VALUE_BYTES`] bytes: testing a row costs a bounded
//! number of set lookups and comparisons whatever a request sends.
//!
//! ```
//! use pinnersage_catalog::filter::{AttributeTable, Filter};
//! let table = AttributeTable::from_json_rows([
//!     Some(r#"{"genres":"Comedy|Drama","year":"1995"}"#),
//!     Some(r#"{"genres":"Horror","year":"2003"}"#),
//!     None,
//! ]);
//! let filter = Filter::parse(["genres~Comedy", "year<2000"], &table).unwrap();
//! assert_eq!((0..3).filter(|&r| filter.matches(&table, r)).collect::<Vec<_>>(), [0]);
//! let err = Filter::parse(["colour:red"], &table).unwrap_err();
//! assert!(err.to_string().contains("unknown attribute \"colour\""));
//! ```

use std::collections::{HashMap, HashSet};

use parking_lot::RwLock;

use crate::append_only::AppendOnly;

use serde_json::Value;

/// One attribute value of one item.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    /// A text (strings; numbers and booleans keep their JSON text here too).
    Text(Box<str>, Option<f64>),
    /// A list of texts.
    List(Box<[Box<str>]>),
}

/// The attributes of a catalog by column, for filtering: the generation's rows parsed once,
/// and rows added while serving ([`AttributeTable::append`]) beside them.
#[derive(Debug, Default)]
pub struct AttributeTable {
    /// Rows parsed by [`AttributeTable::from_json_rows`].
    base_rows: usize,
    /// Columns of those rows: one cell per row (`None`: the item lacks the attribute).
    columns: Vec<Vec<Option<Cell>>>,
    schema: RwLock<Schema>,
    /// Cells of the rows appended since, by column index.
    added: AppendOnly<Box<[(usize, Cell)]>>,
}

/// The attribute names and what their values are.
#[derive(Debug, Default)]
struct Schema {
    /// Attribute name -> column index.
    names: HashMap<String, usize>,
    /// Whether any value of the column is a number (range conditions need one).
    numeric: Vec<bool>,
}

impl Schema {
    /// The column of `name` (a new one if unseen) for `cell`.
    fn column(&mut self, name: String, cell: &Cell) -> usize {
        let next = self.numeric.len();
        let col = *self.names.entry(name).or_insert(next);
        if col == next {
            self.numeric.push(false);
        }
        self.numeric[col] |= matches!(cell, Cell::Text(_, Some(_)));
        col
    }
}

/// The cells of one row's attributes (a JSON object text); values that are neither strings,
/// numbers, booleans nor lists of them are left out.
fn cells(text: Option<&str>) -> Vec<(String, Cell)> {
    let Some(Ok(Value::Object(map))) = text.map(serde_json::from_str::<Value>) else {
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(name, value)| Some((name, cell_of(&value)?)))
        .collect()
}

impl AttributeTable {
    /// Parses each row's attributes (a JSON object text, or `None`). Values that are neither
    /// strings, numbers, booleans nor lists of them are left out.
    pub fn from_json_rows<'a>(rows: impl IntoIterator<Item = Option<&'a str>>) -> Self {
        let mut schema = Schema::default();
        let mut columns: Vec<Vec<Option<Cell>>> = Vec::new();
        let mut base_rows = 0;
        for (row, text) in rows.into_iter().enumerate() {
            base_rows = row + 1;
            for (name, cell) in cells(text) {
                let col = schema.column(name, &cell);
                if col == columns.len() {
                    columns.push(Vec::new());
                }
                let column = &mut columns[col];
                column.resize(row + 1, None);
                column[row] = Some(cell);
            }
        }
        for column in &mut columns {
            column.resize(base_rows, None);
        }
        Self {
            base_rows,
            columns,
            schema: RwLock::new(schema),
            added: AppendOnly::new(),
        }
    }

    /// Appends the next row's attributes (the catalog's row `rows()`): filters see them at once.
    /// One caller at a time (the catalog's writer).
    ///
    /// ```
    /// use pinnersage_catalog::filter::{AttributeTable, Filter};
    /// let table = AttributeTable::from_json_rows([Some(r#"{"lang":"en"}"#)]);
    /// assert_eq!(table.append(Some(r#"{"lang":"de","year":2024}"#)), 1);
    /// let filter = Filter::parse(["year>2000"], &table).unwrap();
    /// assert!(!filter.matches(&table, 0) && filter.matches(&table, 1));
    /// ```
    pub fn append(&self, text: Option<&str>) -> usize {
        let cells = cells(text);
        let mut schema = self.schema.write();
        let row: Box<[(usize, Cell)]> = cells
            .into_iter()
            .map(|(name, cell)| (schema.column(name, &cell), cell))
            .collect();
        self.base_rows + self.added.push(row)
    }

    /// Rows covered.
    pub fn rows(&self) -> usize {
        self.base_rows + self.added.len()
    }

    /// The attribute names, sorted.
    pub fn names(&self) -> Vec<String> {
        let schema = self.schema.read();
        let mut names: Vec<String> = schema.names.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The cell of `row` in column `col`, if it has one.
    fn cell(&self, col: usize, row: usize) -> Option<&Cell> {
        if row < self.base_rows {
            return self.columns.get(col)?.get(row)?.as_ref();
        }
        let cells = self.added.get(row - self.base_rows)?;
        cells.iter().find(|(c, _)| *c == col).map(|(_, cell)| cell)
    }
}

fn cell_of(value: &Value) -> Option<Cell> {
    match value {
        Value::String(s) => Some(Cell::Text(s.as_str().into(), s.trim().parse().ok())),
        Value::Number(n) => Some(Cell::Text(n.to_string().into(), n.as_f64())),
        Value::Bool(b) => Some(Cell::Text(b.to_string().into(), None)),
        Value::Array(items) => Some(Cell::List(
            items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.as_str().into()),
                    Value::Number(n) => Some(n.to_string().into()),
                    Value::Bool(b) => Some(b.to_string().into()),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

/// What a condition tests.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    /// Equals one of the values (a list: has an element equal to one); a set, so a cell costs
    /// one lookup however many alternatives a condition lists.
    AnyOf(HashSet<Box<str>>),
    /// Contains the text (a list: has it as an element).
    Contains(String),
    /// A number within the bounds (inclusive flags).
    Range {
        min: Option<(f64, bool)>,
        max: Option<(f64, bool)>,
    },
}

/// One condition on one attribute.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    column: usize,
    negated: bool,
    test: Test,
}

/// A parsed, checked filter: all of its conditions must hold.
#[derive(Debug, Clone)]
pub struct Filter {
    conditions: Vec<Condition>,
    text: Vec<String>,
    /// The share of rows that match, estimated once on a sample.
    selectivity: std::sync::OnceLock<f64>,
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.conditions == other.conditions
    }
}

/// Rows a [`Filter::selectivity`] estimate looks at, at most.
pub const SELECTIVITY_SAMPLE: usize = 4096;

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter {condition:?}: {message}")]
pub struct FilterError {
    /// The condition as given (its first 64 characters and `...` when longer).
    pub condition: String,
    /// What is wrong.
    pub message: String,
}

/// Most conditions in one filter.
pub const MAX_CONDITIONS: usize = 32;

/// Most alternatives in one `attr:a|b|...` condition.
pub const MAX_ALTERNATIVES: usize = 256;

/// Longest value (each alternative, a `~` text, a number) in bytes.
pub const MAX_VALUE_BYTES: usize = 256;

impl Filter {
    /// Parses and checks `conditions` against `table`'s attributes: an unknown attribute, a
    /// range on an attribute with no numeric value, a malformed condition or a bad number is an
    /// error naming the condition.
    pub fn parse<S: AsRef<str>>(
        conditions: impl IntoIterator<Item = S>,
        table: &AttributeTable,
    ) -> Result<Self, FilterError> {
        let mut parsed = Vec::new();
        let mut text = Vec::new();
        for c in conditions {
            let c = c.as_ref();
            if parsed.len() == MAX_CONDITIONS {
                return Err(FilterError {
                    condition: shortened(c),
                    message: format!("at most {MAX_CONDITIONS} conditions"),
                });
            }
            parsed.push(parse_condition(c, table).map_err(|message| FilterError {
                condition: shortened(c),
                message,
            })?);
            text.push(c.to_owned());
        }
        Ok(Self {
            conditions: parsed,
            text,
            selectivity: std::sync::OnceLock::new(),
        })
    }

    /// The share of `table`'s rows that match, estimated on at most [`SELECTIVITY_SAMPLE`]
    /// evenly spaced rows (exact for smaller tables) and remembered: what chooses between a
    /// filtered graph search and an exact scan of the matching items.
    pub fn selectivity(&self, table: &AttributeTable) -> f64 {
        *self.selectivity.get_or_init(|| {
            let rows = table.rows();
            if rows == 0 {
                return 0.0;
            }
            let step = rows.div_ceil(SELECTIVITY_SAMPLE).max(1);
            let (mut seen, mut matched) = (0usize, 0usize);
            for row in (0..rows).step_by(step) {
                seen += 1;
                matched += usize::from(self.matches(table, row));
            }
            matched as f64 / seen as f64
        })
    }

    /// Whether no condition was given (everything matches).
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// The conditions as given (a cache key, a log line).
    pub fn conditions(&self) -> &[String] {
        &self.text
    }

    /// Whether catalog row `row` holds every condition.
    pub fn matches(&self, table: &AttributeTable, row: usize) -> bool {
        self.conditions.iter().all(|c| {
            let cell = table.cell(c.column, row);
            let holds = cell.is_some_and(|cell| test(&c.test, cell));
            holds != c.negated
        })
    }
}

fn test(test: &Test, cell: &Cell) -> bool {
    match (test, cell) {
        (Test::AnyOf(values), Cell::Text(t, _)) => values.contains(t),
        (Test::AnyOf(values), Cell::List(items)) => items.iter().any(|i| values.contains(i)),
        (Test::Contains(v), Cell::Text(t, _)) => t.contains(v.as_str()),
        (Test::Contains(v), Cell::List(items)) => items.iter().any(|i| **i == **v),
        (Test::Range { min, max }, Cell::Text(_, Some(x))) => {
            min.is_none_or(|(m, inclusive)| if inclusive { *x >= m } else { *x > m })
                && max.is_none_or(|(m, inclusive)| if inclusive { *x <= m } else { *x < m })
        }
        (Test::Range { .. }, _) => false,
    }
}

fn parse_condition(text: &str, table: &AttributeTable) -> Result<Condition, String> {
    let (negated, body) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    // The first operator character ends the attribute name.
    let at = body
        .find([':', '~', '<', '>'])
        .ok_or("no operator: write attr:value, attr:a|b, attr~text, attr>=n, attr<n (! negates)")?;
    let (name, rest) = body.split_at(at);
    let name = name.trim();
    if name.is_empty() {
        return Err("no attribute name before the operator".into());
    }
    let schema = table.schema.read();
    let column = *schema.names.get(name).ok_or_else(|| {
        let mut names: Vec<&str> = schema.names.keys().map(String::as_str).collect();
        names.sort_unstable();
        format!(
            "unknown attribute {name:?} (the catalog's attributes: {})",
            if names.is_empty() {
                "none; import them with the items (`attributes`)".to_owned()
            } else {
                names.join(", ")
            }
        )
    })?;
    let (op, value) = [">=", "<=", ":", "~", ">", "<"]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v)))
        .expect("starts with an operator");
    if value.is_empty() {
        return Err(format!("no value after {op:?}"));
    }
    let test = match op {
        ":" => {
            let values: Vec<&str> = value.split('|').collect();
            if values.len() > MAX_ALTERNATIVES {
                return Err(format!(
                    "{} alternatives: at most {MAX_ALTERNATIVES} per condition",
                    values.len()
                ));
            }
            if let Some(long) = values.iter().find(|v| v.len() > MAX_VALUE_BYTES) {
                return Err(too_long(long));
            }
            Test::AnyOf(values.into_iter().map(Box::from).collect())
        }
        "~" if value.len() > MAX_VALUE_BYTES => return Err(too_long(value)),
        "~" => Test::Contains(value.to_owned()),
        _ if value.len() > MAX_VALUE_BYTES => return Err(too_long(value)),
        _ => {
            let bound: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| format!("{value:?} is not a number"))?;
            if !schema.numeric[column] {
                return Err(format!(
                    "attribute {name:?} has no numeric values: ranges need numbers"
                ));
            }
            match op {
                ">=" => Test::Range {
                    min: Some((bound, true)),
                    max: None,
                },
                ">" => Test::Range {
                    min: Some((bound, false)),
                    max: None,
                },
                "<=" => Test::Range {
                    min: None,
                    max: Some((bound, true)),
                },
                _ => Test::Range {
                    min: None,
                    max: Some((bound, false)),
                },
            }
        }
    };
    Ok(Condition {
        column,
        negated,
        test,
    })
}

/// `condition` as an error names it: whole, or its first 64 characters and `...`.
fn shortened(condition: &str) -> String {
    match condition.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &condition[..end]),
        None => condition.to_owned(),
    }
}

/// The error for a value over [`MAX_VALUE_BYTES`].
fn too_long(value: &str) -> String {
    format!(
        "a value of {} bytes: values are limited to {MAX_VALUE_BYTES} bytes",
        value.len()
    )
}

impl pinnersage_core::error::Kind for FilterError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        BadInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> AttributeTable {
        AttributeTable::from_json_rows([
            Some(r#"{"lang":"en","tags":["a","b"],"price":9.5,"in_stock":true}"#),
            Some(r#"{"lang":"de","tags":["b"],"price":"12","in_stock":false}"#),
            Some(r#"{"lang":"fr","price":"n/a"}"#),
            None,
        ])
    }

    fn rows(conditions: &[&str]) -> Vec<usize> {
        let t = table();
        let f = Filter::parse(conditions, &t).unwrap();
        (0..t.rows()).filter(|&r| f.matches(&t, r)).collect()
    }

    #[test]
    fn conditions_select_the_rows_they_describe() {
        assert_eq!(rows(&[]), [0, 1, 2, 3]);
        assert_eq!(rows(&["lang:en"]), [0]);
        assert_eq!(rows(&["lang:en|de"]), [0, 1]);
        assert_eq!(rows(&["!lang:en|de"]), [2, 3]);
        assert_eq!(rows(&["tags:b"]), [0, 1]);
        assert_eq!(rows(&["tags~a"]), [0]);
        assert_eq!(rows(&["lang~e"]), [0, 1]);
        assert_eq!(rows(&["in_stock:true"]), [0]);
        assert_eq!(rows(&["price>=9.5"]), [0, 1]);
        assert_eq!(rows(&["price>9.5"]), [1]);
        assert_eq!(rows(&["price<12"]), [0]);
        assert_eq!(rows(&["price<=12", "lang:de"]), [1]);
        assert_eq!(rows(&["!price<=12"]), [2, 3]);
        assert_eq!(rows(&["lang:xx"]), Vec::<usize>::new());
        let t = table();
        let f = Filter::parse(["lang:en|de"], &t).unwrap();
        assert_eq!(f.selectivity(&t), 0.5);
    }

    #[test]
    fn bad_filters_name_the_condition() {
        let t = table();
        for (condition, message) in [
            ("colour:red", "unknown attribute \"colour\""),
            ("lang", "no operator"),
            (":en", "no attribute name"),
            ("lang:", "no value"),
            ("price>=cheap", "not a number"),
            ("lang>=3", "no numeric values"),
            ("price<inf", "not a number"),
        ] {
            let err = Filter::parse([condition], &t).unwrap_err();
            assert_eq!(err.condition, condition);
            assert!(err.to_string().contains(message), "{condition}: {err}");
        }
        let many = vec!["lang:en"; MAX_CONDITIONS + 1];
        assert!(Filter::parse(many, &t).is_err());
    }

    #[test]
    fn alternatives_and_value_lengths_are_bounded() {
        let t = table();
        let alternatives = |n: usize| {
            let values: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
            format!("lang:en|{}", values.join("|"))
        };
        let most = alternatives(MAX_ALTERNATIVES - 1);
        let f = Filter::parse([most.as_str()], &t).unwrap();
        assert!(f.matches(&t, 0) && !f.matches(&t, 1));
        let over = alternatives(MAX_ALTERNATIVES);
        let err = Filter::parse([over.as_str()], &t).unwrap_err();
        assert!(
            err.message.contains(&format!("at most {MAX_ALTERNATIVES}")),
            "{err}"
        );
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        for condition in [
            format!("lang:{long}"),
            format!("lang:en|{long}"),
            format!("lang~{long}"),
            format!("price>=1{}", "0".repeat(MAX_VALUE_BYTES)),
        ] {
            let err = Filter::parse([condition.as_str()], &t).unwrap_err();
            assert!(
                err.message
                    .contains(&format!("limited to {MAX_VALUE_BYTES} bytes")),
                "{err}"
            );
        }
        let longest = format!("lang:{}", "x".repeat(MAX_VALUE_BYTES));
        assert!(Filter::parse([longest.as_str()], &t).is_ok());
    }
}
