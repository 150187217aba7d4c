//! Closed sets of wire strings (statuses, kinds, formats) as Rust enums, so the OpenAPI document
//! lists exactly the values the code knows, and the names are written once.
//!
//! Where such a value still travels as a plain `String` (request fields that are validated
//! together so every bad field is named, and database columns), the field keeps its `String`
//! type and points its schema at the enum (`#[schema(value_type = ..)]`); `parse` and
//! `as_str` go between the two.

/// Declares an enum whose variants serialise as the given strings, with `ToSchema` (a string
/// enum in the spec), `as_str`, `parse` and `ALL`.
///
/// ```ignore
/// wire_enum! {
///     /// Where a generation is.
///     pub enum GenerationStatus { Queued = "queued", Running = "running" }
/// }
/// ```
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $wire:tt),+ $(,)?
        }
    ) => {
        // The derive comes first: the attributes may use its helpers (`#[schema(..)]`).
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        $(#[$meta])*
        $vis enum $name {
            $($(#[$variant_meta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The value as sent on the wire and stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire),+
                }
            }

            /// The value named by `raw`; `None` for anything else.
            pub fn parse(raw: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|value| value.as_str() == raw)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    wire_enum! {
        /// A test set.
        enum Sample { First = "first", SecondOne = "second_one" }
    }

    #[test]
    fn serde_and_the_schema_use_the_declared_names() {
        assert_eq!(Sample::parse("second_one"), Some(Sample::SecondOne));
        assert_eq!(Sample::parse("SecondOne"), None);
        assert_eq!(
            serde_json::to_value(Sample::ALL).unwrap(),
            serde_json::json!(["first", "second_one"])
        );
        let schema = serde_json::to_value(<Sample as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(["first", "second_one"]));
    }
}
