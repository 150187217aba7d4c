//! Cursor pagination: `?limit=1..100&cursor=<opaque>` → `{data, next_cursor}`. Ids are
//! UUIDv7, so ordering by id is ordering by creation; the cursor is the last id seen.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        RefOr, Schema,
        schema::{ArrayBuilder, ObjectBuilder, Ref, SchemaType, Type},
    },
};
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 64)]
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::validation(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }

    /// The id to continue after (exclusive), newest-first order.
    pub fn after(&self) -> Result<Option<Uuid>, ApiError> {
        let Some(cursor) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| Uuid::from_slice(&bytes).ok())
            .map(Some)
            .ok_or_else(|| ApiError::validation("cursor", "is not a cursor this API returned"))
    }
}

/// The cursor that continues after `id`.
pub fn cursor_after(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// A page of results. Each list route names its page (`pub type GenerationPage =
/// Page<GenerationView>`), so the spec has one component per page (see [`PartialSchema`] below).
#[derive(Debug, Serialize)]
pub struct Page<T: ToSchema> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

// Written by hand: the derive inlines a generic item schema in every page. Here a page of
// `GenerationView` is the component `GenerationPage`, its items a `$ref` to `GenerationView`,
// and its example is built from the item's.
impl<T: ToSchema> PartialSchema for Page<T> {
    fn schema() -> RefOr<Schema> {
        let item = T::name();
        let example = match T::schema() {
            RefOr::T(Schema::Object(object)) => object.example,
            _ => None,
        }
        .map(|item| serde_json::json!({ "data": [item], "next_cursor": null }));
        let mut page = ObjectBuilder::new()
            .description(Some(format!(
                "A page of `{item}`; `next_cursor` continues it."
            )))
            .property(
                "data",
                ArrayBuilder::new().items(Ref::from_schema_name(item.clone())),
            )
            .required("data")
            .property(
                "next_cursor",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .description(Some(
                        "Pass as `cursor` for the next page; null on the last page.",
                    )),
            )
            .required("next_cursor")
            .build();
        // The same `example` keyword the derive writes (the builder's setter is deprecated).
        page.example = example;
        Schema::Object(page).into()
    }
}

impl<T: ToSchema> ToSchema for Page<T> {
    fn name() -> Cow<'static, str> {
        let item = T::name();
        format!("{}Page", item.strip_suffix("View").unwrap_or(&item)).into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(schemas);
    }
}

impl<T: ToSchema> Page<T> {
    /// `rows` was fetched with `limit + 1`; the extra row only proves there is a next page.
    pub fn from_rows<R>(
        mut rows: Vec<R>,
        limit: i64,
        id: impl Fn(&R) -> Uuid,
        view: impl Fn(R) -> T,
    ) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last()
                .map(|r| URL_SAFE_NO_PAD.encode(id(r).as_bytes()))
        } else {
            None
        };
        Self {
            data: rows.into_iter().map(view).collect(),
            next_cursor,
        }
    }
}
