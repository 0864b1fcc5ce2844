//! The source registry's rules: which roles exist, which columns each role needs, and which
//! column types satisfy each need. The glue reads a relation's columns from the catalog and
//! asks [`check_columns`] whether that relation can serve a role.

use std::fmt;

/// A kind of type a role's column accepts. Anything the implicit casts of the queries that
/// read the column can handle is accepted; anything ambiguous (a `timestamp` without time
/// zone) is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeClass {
    /// `smallint`, `integer`, `bigint`.
    Integer,
    /// Any integer, `real`, `double precision` or `numeric`.
    Number,
    /// `text`, `character varying`, `character`.
    Text,
    /// `boolean`.
    Boolean,
    /// `timestamp with time zone` only: opsmeter buckets in UTC and a zone-less timestamp
    /// has no defined instant.
    Timestamptz,
}

impl TypeClass {
    /// The catalog type names (`pg_type.typname`, after resolving domains) this class accepts.
    pub fn accepted_typnames(self) -> &'static [&'static str] {
        match self {
            TypeClass::Integer => &["int2", "int4", "int8"],
            TypeClass::Number => &["int2", "int4", "int8", "float4", "float8", "numeric"],
            TypeClass::Text => &["text", "varchar", "bpchar"],
            TypeClass::Boolean => &["bool"],
            TypeClass::Timestamptz => &["timestamptz"],
        }
    }

    /// Whether a column whose base type is `typname` serves this class.
    pub fn accepts(self, typname: &str) -> bool {
        self.accepted_typnames().contains(&typname)
    }
}

impl fmt::Display for TypeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TypeClass::Integer => "an integer type: smallint, integer or bigint",
            TypeClass::Number => {
                "a numeric type: smallint, integer, bigint, real, double precision or numeric"
            }
            TypeClass::Text => "a text type: text, character varying or character",
            TypeClass::Boolean => "boolean",
            TypeClass::Timestamptz => "timestamp with time zone",
        })
    }
}

/// One column a role needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub class: TypeClass,
}

const fn col(name: &'static str, class: TypeClass) -> ColumnSpec {
    ColumnSpec { name, class }
}

use TypeClass::{Boolean, Integer, Number, Text, Timestamptz};

const GROUPS_COLUMNS: &[ColumnSpec] = &[col("id", Integer), col("platform", Text)];
const USAGE_LOGS_COLUMNS: &[ColumnSpec] = &[
    col("created_at", Timestamptz),
    col("group_id", Integer),
    col("duration_ms", Number),
    col("first_token_ms", Number),
    col("input_tokens", Integer),
    col("output_tokens", Integer),
    col("cache_creation_tokens", Integer),
    col("cache_read_tokens", Integer),
];
const ERROR_LOGS_COLUMNS: &[ColumnSpec] = &[
    col("created_at", Timestamptz),
    col("platform", Text),
    col("group_id", Integer),
    col("is_business_limited", Boolean),
    col("error_owner", Text),
    col("status_code", Integer),
    col("upstream_status_code", Integer),
];
const LOG_RECORDS_COLUMNS: &[ColumnSpec] = &[
    col("created_at", Timestamptz),
    col("model_name", Text),
    col("status_code", Integer),
    col("tokens_in", Integer),
    col("tokens_out", Integer),
    col("latency_ms", Number),
];

/// A source role: a kind of input relation opsmeter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Groups,
    UsageLogs,
    ErrorLogs,
    LogRecords,
}

impl Role {
    /// Every role, in the order they are listed to users.
    pub const ALL: [Role; 4] = [
        Role::Groups,
        Role::UsageLogs,
        Role::ErrorLogs,
        Role::LogRecords,
    ];

    /// The role's name as SQL callers spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Groups => "groups",
            Role::UsageLogs => "usage_logs",
            Role::ErrorLogs => "error_logs",
            Role::LogRecords => "log_records",
        }
    }

    /// The extension's own table that serves the role until it is re-pointed.
    pub fn default_relation(self) -> &'static str {
        match self {
            Role::Groups => "opsmeter.groups",
            Role::UsageLogs => "opsmeter.usage_logs",
            Role::ErrorLogs => "opsmeter.error_logs",
            Role::LogRecords => "opsmeter.log_records",
        }
    }

    /// The columns the role's readers use (seed semantics: `ops_repo_preagg` for the first
    /// three, `daily_stats_job` for `log_records`).
    pub fn columns(self) -> &'static [ColumnSpec] {
        match self {
            Role::Groups => GROUPS_COLUMNS,
            Role::UsageLogs => USAGE_LOGS_COLUMNS,
            Role::ErrorLogs => ERROR_LOGS_COLUMNS,
            Role::LogRecords => LOG_RECORDS_COLUMNS,
        }
    }

    /// Parses a role name exactly as listed (case-sensitive, like SQL string literals).
    pub fn parse(name: &str) -> Result<Role, SourceError> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| SourceError::UnknownRole(name.to_string()))
    }
}

/// The names of all roles, comma-separated, for messages.
pub fn known_roles() -> String {
    Role::ALL.map(Role::name).join(", ")
}

/// A column of a candidate relation as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `pg_type.typname` of the column's type after resolving domains to their base type.
    pub typname: String,
    /// The type as `format_type` prints it, for messages.
    pub display: String,
}

/// The relation kinds (`pg_class.relkind`) that can serve a role: tables, partitioned tables,
/// views, materialized views and foreign tables.
pub fn relkind_allowed(relkind: char) -> bool {
    matches!(relkind, 'r' | 'p' | 'v' | 'm' | 'f')
}

/// Everything that can be wrong with a source. One error type for the domain; the glue maps
/// each variant to a SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("unknown source role \"{0}\"")]
    UnknownRole(String),
    #[error("relation {relation} cannot be the \"{role}\" source: it is {kind}, not a table, view, materialized view or foreign table")]
    WrongRelkind {
        role: &'static str,
        relation: String,
        kind: String,
    },
    #[error("relation {relation} cannot be the \"{role}\" source: it has no column \"{column}\" (needs {class})")]
    MissingColumn {
        role: &'static str,
        relation: String,
        column: &'static str,
        class: TypeClass,
    },
    #[error("relation {relation} cannot be the \"{role}\" source: column \"{column}\" is {found}, it needs {class}")]
    WrongType {
        role: &'static str,
        relation: String,
        column: &'static str,
        found: String,
        class: TypeClass,
    },
    #[error("source \"{role}\" points to a relation that no longer exists (OID {oid})")]
    Dangling { role: &'static str, oid: u32 },
    #[error("permission denied: cannot read relation {relation} for the \"{role}\" source")]
    NoSelectPrivilege {
        role: &'static str,
        relation: String,
    },
}

impl SourceError {
    /// A hint for the user, where one helps.
    pub fn hint(&self) -> Option<String> {
        match self {
            SourceError::UnknownRole(_) => Some(format!("Known roles: {}.", known_roles())),
            SourceError::MissingColumn { role, .. } | SourceError::WrongType { role, .. } => {
                Some(format!(
                    "A view can rename and cast columns; the \"{role}\" role needs: {}.",
                    Role::parse(role)
                        .map(describe_columns)
                        .unwrap_or_default()
                ))
            }
            SourceError::Dangling { role, .. } => Some(format!(
                "Call ops_set_source('{role}', ...) with an existing relation, or ops_reset_source('{role}')."
            )),
            _ => None,
        }
    }
}

/// `name type, name type, ...` for a role, as hints print it.
pub fn describe_columns(role: Role) -> String {
    role.columns()
        .iter()
        .map(|c| format!("{} {}", c.name, short_class(c.class)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn short_class(class: TypeClass) -> &'static str {
    match class {
        TypeClass::Integer => "integer",
        TypeClass::Number => "number",
        TypeClass::Text => "text",
        TypeClass::Boolean => "boolean",
        TypeClass::Timestamptz => "timestamptz",
    }
}

/// Checks that `columns` (the relation's columns, any order, extra columns allowed) provide
/// every column `role` needs with an accepted type. Reports the first problem in the role's
/// column order, so the message is deterministic.
pub fn check_columns(role: Role, relation: &str, columns: &[Column]) -> Result<(), SourceError> {
    for spec in role.columns() {
        match columns.iter().find(|c| c.name == spec.name) {
            None => {
                return Err(SourceError::MissingColumn {
                    role: role.name(),
                    relation: relation.to_string(),
                    column: spec.name,
                    class: spec.class,
                })
            }
            Some(c) if !spec.class.accepts(&c.typname) => {
                return Err(SourceError::WrongType {
                    role: role.name(),
                    relation: relation.to_string(),
                    column: spec.name,
                    found: c.display.clone(),
                    class: spec.class,
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Human name of a relkind with its article, for the wrong-kind message.
pub fn relkind_name(relkind: char) -> &'static str {
    match relkind {
        'r' => "a table",
        'p' => "a partitioned table",
        'v' => "a view",
        'm' => "a materialized view",
        'f' => "a foreign table",
        'i' | 'I' => "an index",
        'S' => "a sequence",
        'c' => "a composite type",
        't' => "a TOAST table",
        _ => "a relation of an unsupported kind",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, typname: &str) -> Column {
        Column {
            name: name.into(),
            typname: typname.into(),
            display: typname.into(),
        }
    }

    fn full(role: Role) -> Vec<Column> {
        role.columns()
            .iter()
            .map(|s| c(s.name, s.class.accepted_typnames()[0]))
            .collect()
    }

    #[test]
    fn every_role_parses_back_from_its_name() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.name()), Ok(r));
        }
    }

    #[test]
    fn unknown_role_lists_known_ones() {
        let e = Role::parse("usage").unwrap_err();
        assert_eq!(e, SourceError::UnknownRole("usage".into()));
        assert_eq!(
            e.hint().unwrap(),
            "Known roles: groups, usage_logs, error_logs, log_records."
        );
        // Role names are case-sensitive, like the SQL literals that carry them.
        assert!(Role::parse("Groups").is_err());
    }

    #[test]
    fn a_relation_with_every_column_passes_in_any_order_with_extras() {
        for r in Role::ALL {
            let mut cols = full(r);
            cols.reverse();
            cols.push(c("extra", "jsonb"));
            assert_eq!(check_columns(r, "t", &cols), Ok(()));
        }
    }

    #[test]
    fn each_missing_column_is_named() {
        for r in Role::ALL {
            for (i, spec) in r.columns().iter().enumerate() {
                let mut cols = full(r);
                cols.remove(i);
                let e = check_columns(r, "public.v", &cols).unwrap_err();
                assert_eq!(
                    e,
                    SourceError::MissingColumn {
                        role: r.name(),
                        relation: "public.v".into(),
                        column: spec.name,
                        class: spec.class
                    }
                );
                assert!(e
                    .to_string()
                    .contains(&format!("no column \"{}\"", spec.name)));
            }
        }
    }

    #[test]
    fn mistyped_column_names_found_and_needed_type() {
        let mut cols = full(Role::UsageLogs);
        cols[0] = Column {
            name: "created_at".into(),
            typname: "timestamp".into(),
            display: "timestamp without time zone".into(),
        };
        let e = check_columns(Role::UsageLogs, "public.u", &cols).unwrap_err();
        assert_eq!(
            e.to_string(),
            "relation public.u cannot be the \"usage_logs\" source: column \"created_at\" is \
             timestamp without time zone, it needs timestamp with time zone"
        );
        assert!(e.hint().unwrap().contains("created_at timestamptz"));
    }

    #[test]
    fn type_classes_accept_exactly_their_types() {
        assert!(TypeClass::Integer.accepts("int4"));
        assert!(!TypeClass::Integer.accepts("numeric"));
        assert!(TypeClass::Number.accepts("numeric"));
        assert!(TypeClass::Number.accepts("float8"));
        assert!(!TypeClass::Number.accepts("text"));
        assert!(TypeClass::Text.accepts("varchar"));
        assert!(!TypeClass::Text.accepts("int4"));
        assert!(!TypeClass::Timestamptz.accepts("timestamp"));
        assert!(!TypeClass::Boolean.accepts("int2"));
    }

    #[test]
    fn first_problem_in_role_order_is_reported() {
        // Both group_id and duration_ms are wrong: group_id comes first in the role's list.
        let mut cols = full(Role::UsageLogs);
        for col in cols.iter_mut() {
            if col.name == "group_id" || col.name == "duration_ms" {
                col.typname = "text".into();
                col.display = "text".into();
            }
        }
        match check_columns(Role::UsageLogs, "x", &cols).unwrap_err() {
            SourceError::WrongType { column, .. } => assert_eq!(column, "group_id"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn relkinds() {
        for k in ['r', 'p', 'v', 'm', 'f'] {
            assert!(relkind_allowed(k), "{k}");
        }
        for k in ['i', 'S', 'c', 't', 'I'] {
            assert!(!relkind_allowed(k), "{k}");
        }
        assert_eq!(relkind_name('S'), "a sequence");
        assert_eq!(relkind_name('i'), "an index");
    }

    #[test]
    fn default_relations_live_in_the_opsmeter_schema() {
        for r in Role::ALL {
            assert_eq!(r.default_relation(), format!("opsmeter.{}", r.name()));
        }
    }
}
