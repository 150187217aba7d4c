pub mod job;
pub mod openai;
pub mod params;
pub mod pricing;
pub mod provider;
pub mod reference_images;
pub mod renderer;
pub mod webhooks;
