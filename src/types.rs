//! Small SQL types pgrx does not provide.

use pgrx::{pg_sys, FromDatum, IntoDatum};

/// A `regclass` argument or result: a relation's OID, printed by PostgreSQL as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regclass(pub pg_sys::Oid);

impl FromDatum for Regclass {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        typoid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: a regclass datum is an Oid by value.
        unsafe { pg_sys::Oid::from_polymorphic_datum(datum, is_null, typoid) }.map(Regclass)
    }
}

impl IntoDatum for Regclass {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        self.0.into_datum()
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGCLASSOID
    }
}

pgrx::impl_sql_translatable!(Regclass, "regclass");

// SAFETY: a regclass argument is an Oid passed by value; `unbox_arg_using_from_datum` reads it
// through the FromDatum impl above.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for Regclass {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("regclass argument {index} must not be null"))
    }
}

// SAFETY: returns the Oid by value, as PostgreSQL expects for regclass.
unsafe impl pgrx::callconv::BoxRet for Regclass {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

/// A `regprocedure` argument: a function's OID, printed by PostgreSQL as its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regprocedure(pub pg_sys::Oid);

impl FromDatum for Regprocedure {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        typoid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: a regprocedure datum is an Oid by value.
        unsafe { pg_sys::Oid::from_polymorphic_datum(datum, is_null, typoid) }.map(Regprocedure)
    }
}

impl IntoDatum for Regprocedure {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        self.0.into_datum()
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGPROCEDUREOID
    }
}

pgrx::impl_sql_translatable!(Regprocedure, "regprocedure");

// SAFETY: a regprocedure argument is an Oid passed by value, read through FromDatum above.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for Regprocedure {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("regprocedure argument {index} must not be null"))
    }
}

/// A `jsonb` argument read as its text (`jsonb_out`), for a core that parses JSON itself and
/// reports malformed input as an `ERROR` of its own (pgrx's `JsonB` panics on a number that
/// does not fit a double).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonbText(pub String);

impl FromDatum for JsonbText {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then(|| JsonbText(JsonbDatum(datum).text()))
    }
}

impl IntoDatum for JsonbText {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        None // arguments only
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

pgrx::impl_sql_translatable!(JsonbText, "jsonb");

// SAFETY: a jsonb argument is a varlena pointer; `unbox_arg_using_from_datum` reads it through
// the FromDatum impl above.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbText {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("jsonb argument {index} must not be null"))
    }
}

/// A `jsonb` argument kept as its datum, for a reader of the binary form (see
/// `records::read_batch`); it reads the text form (`jsonb_out`) only when it must.
#[derive(Debug, Clone, Copy)]
pub struct JsonbDatum(pub pg_sys::Datum);

impl JsonbDatum {
    /// The text form (`jsonb_out`), as [`JsonbText`] reads it.
    pub fn text(&self) -> String {
        // SAFETY: a jsonb datum; jsonb_out detoasts it and returns a palloc'd C string.
        unsafe {
            let cstr =
                pgrx::direct_function_call::<&core::ffi::CStr>(pg_sys::jsonb_out, &[Some(self.0)])
                    .expect("jsonb_out returns a string");
            let text = cstr.to_string_lossy().into_owned();
            pg_sys::pfree(cstr.as_ptr() as *mut core::ffi::c_void);
            text
        }
    }
}

impl FromDatum for JsonbDatum {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(JsonbDatum(datum))
    }
}

impl IntoDatum for JsonbDatum {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        None // arguments only
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

pgrx::impl_sql_translatable!(JsonbDatum, "jsonb");

// SAFETY: as for JsonbText: a varlena pointer read through the FromDatum impl above.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbDatum {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("jsonb argument {index} must not be null"))
    }
}
