//! Table and column names from definitions: validated once, then quoted for
//! the database's dialect. Names are never spliced into SQL unquoted, and
//! values never at all (they are bound as parameters).

use std::fmt;

/// The SQL dialect of a database URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
    MySql,
}

impl Dialect {
    /// The dialect of a URL by its scheme, or `None`.
    pub fn of_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "sqlite" => Some(Dialect::Sqlite),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            _ => None,
        }
    }

    /// A name quoted for this dialect. Names are validated before (no quote
    /// characters), the doubling only guards against misuse.
    pub fn quote(self, name: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
            Dialect::MySql => format!("`{}`", name.replace('`', "``")),
        }
    }

    /// A table name, schema-qualified when it has a schema.
    pub fn quote_table(self, table: &TableName) -> String {
        match &table.schema {
            Some(schema) => format!("{}.{}", self.quote(schema), self.quote(&table.table)),
            None => self.quote(&table.table),
        }
    }

    /// The `n`th (1-based) bound parameter.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Postgres | Dialect::Sqlite => format!("${n}"),
            Dialect::MySql => "?".to_owned(),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
            Dialect::MySql => "mysql",
        })
    }
}

/// Longest name accepted: PostgreSQL's limit (MySQL allows 64).
const MAX_NAME_BYTES: usize = 63;

/// Checks a table, schema or column name: 1-63 bytes of letters, digits,
/// `_`, `$`, `-` and inner spaces. Quotes, dots, semicolons and other
/// punctuation are refused, so a name can never end its quoting.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name may not be empty".to_owned());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("`{name}` is longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return Err(format!("`{name}` starts or ends with a space"));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '_' | '$' | '-' | ' ')))
    {
        return Err(format!(
            "`{name}` contains {bad:?}: names may hold letters, digits, `_`, `$`, `-` and spaces"
        ));
    }
    Ok(())
}

/// A table name as configured: `table` or `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub table: String,
}

impl TableName {
    /// Parses and validates `table` or `schema.table`; `default_schema`
    /// applies to unqualified names.
    pub fn parse(text: &str, default_schema: Option<&str>) -> Result<TableName, String> {
        let parts: Vec<&str> = text.split('.').collect();
        match parts[..] {
            [table] => {
                check_name(table)?;
                Ok(TableName {
                    schema: default_schema.map(str::to_owned),
                    table: table.to_owned(),
                })
            }
            [schema, table] => {
                check_name(schema)?;
                check_name(table)?;
                Ok(TableName {
                    schema: Some(schema.to_owned()),
                    table: table.to_owned(),
                })
            }
            _ => Err(format!(
                "`{text}` is not a table name: write `table` or `schema.table`"
            )),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// Checks a configured `query`: one `SELECT` (or `WITH … SELECT`)
/// statement, no statement separator outside quotes and comments.
pub fn check_query(query: &str) -> Result<(), String> {
    let code = strip_literals(query);
    let first = code
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if first != "select" && first != "with" {
        return Err("a query must be one SELECT (or WITH … SELECT) statement".to_owned());
    }
    if code.trim_end().trim_end_matches(';').contains(';') {
        return Err("a query must be one statement: `;` separates statements".to_owned());
    }
    if code.trim_end().ends_with(';') {
        return Err("remove the trailing `;`: the query is read as a subquery".to_owned());
    }
    Ok(())
}

/// The query with string literals, quoted names and comments blanked out.
fn strip_literals(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(' ');
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                out.push('\n');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_spaces_and_keywords_are_quoted_per_dialect() {
        assert!(check_name("order").is_ok());
        assert!(check_name("unit price").is_ok());
        assert!(check_name("客户").is_ok());
        assert_eq!(Dialect::Postgres.quote("order"), "\"order\"");
        assert_eq!(Dialect::MySql.quote("unit price"), "`unit price`");
    }

    #[test]
    fn names_that_could_end_their_quoting_are_refused() {
        for bad in ["a\"b", "a`b", "x; DROP TABLE t", "", " lead", "a.b", "a/*"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn tables_may_be_schema_qualified() {
        let t = TableName::parse("sales.customer", None).unwrap();
        assert_eq!(Dialect::Postgres.quote_table(&t), "\"sales\".\"customer\"");
        let t = TableName::parse("customer", Some("erp")).unwrap();
        assert_eq!(Dialect::MySql.quote_table(&t), "`erp`.`customer`");
        assert!(TableName::parse("a.b.c", None).is_err());
        assert!(TableName::parse("customer;drop", None).is_err());
    }

    #[test]
    fn queries_are_single_selects() {
        assert!(check_query("SELECT a, 'x;y' FROM t -- ; comment\n WHERE b = 1").is_ok());
        assert!(check_query("with x as (select 1) select * from x").is_ok());
        assert!(check_query("SELECT 1; DROP TABLE t").is_err());
        assert!(check_query("DELETE FROM t").is_err());
        assert!(check_query("SELECT 1;").is_err());
    }
}
