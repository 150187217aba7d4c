//! The closed sets a generation's fields take: its status, the options of a request, the
//! provider that ran it, and the state of its webhook deliveries.

use crate::wire_enum;

wire_enum! {
    /// Where a generation is; `succeeded`, `failed` and `canceled` are final.
    #[schema(example = "succeeded")]
    pub enum GenerationStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Canceled = "canceled",
    }
}

wire_enum! {
    /// Rendering quality; `auto` is priced as `medium`.
    #[schema(example = "medium")]
    pub enum Quality {
        Low = "low",
        Medium = "medium",
        High = "high",
        Auto = "auto",
    }
}

wire_enum! {
    /// Background of the images; `transparent` needs `png` or `webp` output.
    #[schema(example = "auto")]
    pub enum Background {
        Transparent = "transparent",
        Opaque = "opaque",
        Auto = "auto",
    }
}

wire_enum! {
    /// Encoding of the generated images.
    #[schema(example = "png")]
    pub enum OutputFormat {
        Png = "png",
        Jpeg = "jpeg",
        Webp = "webp",
    }
}

wire_enum! {
    /// Strictness of the provider's content moderation.
    #[schema(example = "auto")]
    pub enum Moderation {
        Auto = "auto",
        Low = "low",
    }
}

wire_enum! {
    /// What rendered a generation: the built-in renderer, or OpenAI's gpt-image-2.
    #[schema(example = "builtin")]
    pub enum GenerationProvider {
        Builtin = "builtin",
        Openai = "openai",
    }
}

wire_enum! {
    /// A webhook delivery: `pending` while it is being tried, then `delivered`, or `failed`
    /// (gave up, or the receiver was refused).
    #[schema(example = "delivered")]
    pub enum WebhookDeliveryStatus {
        Pending = "pending",
        Delivered = "delivered",
        Failed = "failed",
    }
}
