// @generated automatically by Diesel CLI.

diesel::table! {
    jobs (id) {
        id -> Uuid,
        kind -> Text,
        payload -> Jsonb,
        status -> Text,
        attempts -> Int4,
        max_attempts -> Int4,
        run_at -> Timestamptz,
        locked_by -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    outbox_mails (id) {
        id -> Uuid,
        to_address -> Text,
        template -> Text,
        subject -> Text,
        text_body -> Text,
        html_body -> Text,
        headers -> Jsonb,
        status -> Text,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        email_normalized -> Text,
        name -> Text,
        avatar_url -> Nullable<Text>,
        password_hash -> Nullable<Text>,
        email_verified_at -> Nullable<Timestamptz>,
        terms_version -> Nullable<Text>,
        terms_accepted_at -> Nullable<Timestamptz>,
        disabled_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        low_balance_emails -> Bool,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        client -> Text,
        auth_method -> Text,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
        last_ip -> Nullable<Text>,
        last_user_agent -> Nullable<Text>,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoked_reason -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Uuid,
        session_id -> Uuid,
        user_id -> Uuid,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        rotated_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    email_tokens (id) {
        id -> Uuid,
        user_id -> Uuid,
        purpose -> Text,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    activity_events (id) {
        id -> Uuid,
        user_id -> Uuid,
        kind -> Text,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        details -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    consents (id) {
        id -> Uuid,
        user_id -> Uuid,
        analytics -> Bool,
        marketing -> Bool,
        policy_version -> Text,
        ip -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    rate_limits (key) {
        key -> Text,
        window_start -> Timestamptz,
        count -> Int4,
        subject -> Text,
    }
}

diesel::table! {
    identities (id) {
        id -> Uuid,
        user_id -> Uuid,
        provider -> Text,
        subject -> Text,
        email -> Nullable<Text>,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_states (state_hash) {
        state_hash -> Bytea,
        provider -> Text,
        pkce_verifier -> Text,
        redirect_to -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        browser_nonce_hash -> Bytea,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        user_id -> Uuid,
        name -> Text,
        prefix -> Text,
        key_hash -> Bytea,
        expires_at -> Nullable<Timestamptz>,
        daily_credit_limit -> Nullable<Int8>,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(email_tokens -> users (user_id));
diesel::joinable!(activity_events -> users (user_id));
diesel::joinable!(consents -> users (user_id));
diesel::joinable!(identities -> users (user_id));
diesel::joinable!(api_keys -> users (user_id));

diesel::table! {
    credit_accounts (user_id) {
        user_id -> Uuid,
        available -> Int8,
        held -> Int8,
        low_balance_notified -> Bool,
        updated_at -> Timestamptz,
        debt -> Int8,
    }
}

diesel::table! {
    credit_grants (id) {
        id -> Uuid,
        user_id -> Uuid,
        source -> Text,
        amount -> Int8,
        remaining -> Int8,
        expires_at -> Nullable<Timestamptz>,
        expired_at -> Nullable<Timestamptz>,
        reference -> Nullable<Text>,
        description -> Text,
        created_at -> Timestamptz,
        refunded_held -> Int8,
    }
}

diesel::table! {
    credit_holds (id) {
        id -> Uuid,
        user_id -> Uuid,
        amount -> Int8,
        status -> Text,
        captured -> Int8,
        reference -> Nullable<Text>,
        api_key_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        settled_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    credit_hold_allocations (hold_id, grant_id) {
        hold_id -> Uuid,
        grant_id -> Uuid,
        amount -> Int8,
    }
}

diesel::table! {
    ledger_entries (id) {
        id -> Uuid,
        user_id -> Uuid,
        kind -> Text,
        available_delta -> Int8,
        held_delta -> Int8,
        grant_id -> Nullable<Uuid>,
        hold_id -> Nullable<Uuid>,
        description -> Text,
        created_at -> Timestamptz,
        debt_delta -> Int8,
    }
}

diesel::joinable!(credit_accounts -> users (user_id));
diesel::joinable!(credit_grants -> users (user_id));
diesel::joinable!(credit_holds -> users (user_id));
diesel::joinable!(credit_hold_allocations -> credit_holds (hold_id));
diesel::joinable!(credit_hold_allocations -> credit_grants (grant_id));
diesel::joinable!(ledger_entries -> users (user_id));

diesel::table! {
    billing_customers (user_id, provider) {
        user_id -> Uuid,
        provider -> Text,
        customer_id -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    plan_periods (provider, subscription_id, period_end) {
        provider -> Text,
        subscription_id -> Text,
        period_end -> Timestamptz,
        user_id -> Uuid,
        plan_id -> Text,
        credits -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> Uuid,
        user_id -> Uuid,
        provider -> Text,
        provider_subscription_id -> Text,
        plan_id -> Text,
        status -> Text,
        current_period_end -> Nullable<Timestamptz>,
        cancel_at_period_end -> Bool,
        provider_updated_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    billing_transactions (id) {
        id -> Uuid,
        user_id -> Nullable<Uuid>,
        anonymous_user_id -> Uuid,
        provider -> Text,
        kind -> Text,
        provider_reference -> Text,
        item_id -> Nullable<Text>,
        amount_cents -> Int8,
        currency -> Text,
        credits -> Int8,
        refunded_transaction_id -> Nullable<Uuid>,
        credits_lost -> Int8,
        created_at -> Timestamptz,
        flag -> Nullable<Text>,
    }
}

diesel::table! {
    billing_payment_aliases (provider, alias) {
        provider -> Text,
        alias -> Text,
        payment_reference -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_events (provider, event_id) {
        provider -> Text,
        event_id -> Text,
        event_type -> Text,
        received_at -> Timestamptz,
        needs_attention -> Nullable<Text>,
    }
}

diesel::joinable!(billing_customers -> users (user_id));
diesel::joinable!(subscriptions -> users (user_id));
diesel::joinable!(billing_transactions -> users (user_id));

diesel::table! {
    reference_images (id) {
        id -> Uuid,
        user_id -> Uuid,
        object_key -> Text,
        content_type -> Text,
        width -> Int4,
        height -> Int4,
        bytes -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    generations (id) {
        id -> Uuid,
        user_id -> Uuid,
        status -> Text,
        prompt -> Text,
        params -> Jsonb,
        provider -> Text,
        cost_credits -> Int8,
        hold_id -> Nullable<Uuid>,
        job_id -> Nullable<Uuid>,
        api_key_id -> Nullable<Uuid>,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    generation_images (id) {
        id -> Uuid,
        generation_id -> Uuid,
        user_id -> Uuid,
        position -> Int4,
        object_key -> Text,
        format -> Text,
        width -> Int4,
        height -> Int4,
        bytes -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(reference_images -> users (user_id));
diesel::joinable!(generations -> users (user_id));
diesel::joinable!(generation_images -> generations (generation_id));

diesel::table! {
    webhook_secrets (user_id) {
        user_id -> Uuid,
        secret -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Uuid,
        generation_id -> Uuid,
        user_id -> Uuid,
        url -> Text,
        event_type -> Text,
        payload -> Jsonb,
        status -> Text,
        attempts -> Int4,
        response_status -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(webhook_secrets -> users (user_id));
diesel::joinable!(webhook_deliveries -> generations (generation_id));

diesel::table! {
    idempotency_keys (scope_hash, key) {
        scope_hash -> Bytea,
        key -> Text,
        request_hash -> Bytea,
        status -> Text,
        response_status -> Nullable<Int4>,
        response_headers -> Nullable<Jsonb>,
        response_body -> Nullable<Bytea>,
        created_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
        user_id -> Nullable<Uuid>,
    }
}

diesel::joinable!(idempotency_keys -> users (user_id));

diesel::table! {
    exports (id) {
        id -> Uuid,
        user_id -> Uuid,
        status -> Text,
        progress -> Int4,
        object_key -> Nullable<Text>,
        bytes -> Nullable<Int8>,
        error -> Nullable<Text>,
        expires_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(exports -> users (user_id));

diesel::table! {
    analytics_events (id) {
        id -> Uuid,
        subject -> Uuid,
        event -> Text,
        properties -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    generation_partials (generation_id, idx) {
        generation_id -> Uuid,
        idx -> Int4,
        object_key -> Text,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(generation_partials -> generations (generation_id));

diesel::table! {
    support_requests (id) {
        id -> Uuid,
        user_id -> Uuid,
        subject -> Text,
        message -> Text,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(support_requests -> users (user_id));

diesel::table! {
    policy_notices (user_id, version) {
        user_id -> Uuid,
        version -> Text,
        queued_at -> Timestamptz,
    }
}

diesel::joinable!(policy_notices -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    support_requests,
    policy_notices,
    analytics_events,
    generation_partials,
    exports,
    webhook_deliveries,
    webhook_secrets,
    generation_images,
    idempotency_keys,
    generations,
    reference_images,
    billing_customers,
    billing_payment_aliases,
    billing_transactions,
    plan_periods,
    subscriptions,
    webhook_events,
    credit_accounts,
    credit_grants,
    credit_hold_allocations,
    credit_holds,
    ledger_entries,
    activity_events,
    api_keys,
    consents,
    email_tokens,
    identities,
    jobs,
    oauth_states,
    outbox_mails,
    rate_limits,
    refresh_tokens,
    sessions,
    users,
);
