//! The write verbs: create, update, and patch (JSON, merge, strategic merge, server-side apply).

use super::*;

pub(crate) fn create(ctx: &Ctx, def: &ResourceDef, ns: &str) -> Result<Response<Body>> {
    let obj = body_json(ctx)?;
    check_type(def, &obj)?;
    let mode = ctx.field_validation()?;
    let manager = ctx.manager();
    let mut store = ctx.shared.lock();
    let name = str_at(&obj, "/metadata/name").to_string();
    check_namespace(&store, def, ns, &name)?;
    check_crd_not_terminating(&store, def)?;
    let prepared = prepare_create(&store, ctx, def, ns, obj, Managed::Update(&manager), mode)?;
    let stored = if ctx.dry_run() {
        let (pns, pname) = crate::store::key_of(&prepared.obj);
        if store.get(&def.storage, &pns, &pname).is_some() {
            return Err(ApiError::already_exists(def.what(), &pname));
        }
        Arc::new(prepared.obj)
    } else {
        commit_create(&mut store, def, prepared.obj, &ctx.now)?
    };
    Ok(written(ctx, def, store, 201, &stored, &prepared.warnings))
}

pub(crate) fn check_identity(def: &ResourceDef, obj: &Value, ns: &str, name: &str) -> Result<()> {
    let body_name = str_at(obj, "/metadata/name");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if def.namespaced {
        let body_ns = str_at(obj, "/metadata/namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

pub(crate) fn update(
    ctx: &Ctx,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>> {
    let obj = body_json(ctx)?;
    check_type(def, &obj)?;
    check_identity(def, &obj, ns, name)?;
    let mode = ctx.field_validation()?;
    let manager = ctx.manager();
    let mut store = ctx.shared.lock();
    let old = store
        .get(&def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def.what(), name))?;
    let body_rv = str_at(&obj, "/metadata/resourceVersion");
    if !body_rv.is_empty() && body_rv != str_at(&old, "/metadata/resourceVersion") {
        return Err(ApiError::stale(def.what(), name));
    }
    let prepared = prepare_update(
        ctx,
        def,
        &old,
        obj,
        sub,
        Managed::Update(&manager),
        mode,
        &store,
    )?;
    let stored = store_update(ctx, &mut store, def, &old, prepared.obj);
    Ok(written(ctx, def, store, 200, &stored, &prepared.warnings))
}

pub(crate) const PATCH_TYPES_CR: [&str; 3] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];
pub(crate) const PATCH_TYPES_BUILTIN: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

pub(crate) fn patch(
    ctx: &Ctx,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>> {
    let ct = ctx.content_type();
    let accepted: &[&str] = if def.is_custom() {
        &PATCH_TYPES_CR
    } else {
        &PATCH_TYPES_BUILTIN
    };
    let ct_ok = accepted.contains(&ct.as_str());
    if !ct_ok {
        return Err(ApiError::unsupported_media(accepted));
    }
    if ct == "application/apply-patch+yaml" {
        return apply_patch(ctx, def, ns, name, sub);
    }
    let mode = ctx.field_validation()?;
    let manager = ctx.manager();
    let mut store = ctx.shared.lock();
    let old = store
        .get(&def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def.what(), name))?;
    let mut doc = present(def, &old);
    match ct.as_str() {
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_slice(&ctx.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut doc, &ops.0).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
                .with_details(json!({}))
            })?;
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(&ctx.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: patch must be a JSON object",
                ));
            }
            if ct == "application/strategic-merge-patch+json" {
                doc = apollo_apimachinery::smp::strategic_merge(&def.group, &def.kind, &doc, &p)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            } else {
                json_patch::merge(&mut doc, &p);
            }
        }
        _ => return Err(ApiError::unsupported_media(accepted)),
    }
    if !doc.is_object() {
        return Err(ApiError::bad_request("patched object is not a JSON object"));
    }
    let old_rv = str_at(&old, "/metadata/resourceVersion").to_string();
    let new_rv = str_at(&doc, "/metadata/resourceVersion").to_string();
    if !new_rv.is_empty() && new_rv != old_rv {
        return Err(ApiError::stale(def.what(), name));
    }
    let old_uid = str_at(&old, "/metadata/uid");
    let new_uid = str_at(&doc, "/metadata/uid");
    if !new_uid.is_empty() && new_uid != old_uid {
        return Err(ApiError::conflict(
            def.what(),
            name,
            &format!(
                "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {old_uid}"
            ),
        ));
    }
    let prepared = prepare_update(
        ctx,
        def,
        &old,
        doc,
        sub,
        Managed::Update(&manager),
        mode,
        &store,
    )?;
    let stored = store_update(ctx, &mut store, def, &old, prepared.obj);
    Ok(written(ctx, def, store, 200, &stored, &prepared.warnings))
}

pub(crate) fn apply_patch(
    ctx: &Ctx,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>> {
    let Some(manager) = ctx.q("fieldManager").map(str::to_string) else {
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            &[FieldError::required(
                "fieldManager",
                "is required for apply patch",
            )],
        ));
    };
    let text = std::str::from_utf8(&ctx.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    let applied: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: object expected",
        ));
    }
    check_type(def, &applied)?;
    check_identity(def, &applied, ns, name)?;
    let mode = ctx.field_validation()?;
    let force = ctx.flag("force");
    let mut warnings = Vec::new();
    // Field validation on the applied configuration itself.
    let mut applied = applied;
    typed_pipeline(ctx, def, &mut applied, mode, &mut warnings)?;
    if let Some(schema) = schema_of(def) {
        let mut probe = applied.clone();
        let removed = schema.prune(&mut probe);
        if !removed.is_empty() {
            match mode {
                FieldValidation::Strict => return Err(strict_error(def, &removed)),
                FieldValidation::Warn => warnings.extend(
                    removed
                        .iter()
                        .map(|p| apollo_apimachinery::schema::unknown_field_warning(p)),
                ),
                FieldValidation::Ignore => {}
            }
            applied = probe;
        }
    }
    // What this endpoint may change.
    let mut status_dropped = None;
    match sub {
        Some(_) => {
            let mut only = Map::new();
            for k in ["apiVersion", "kind", "status"] {
                if let Some(v) = applied.get(k) {
                    only.insert(k.into(), v.clone());
                }
            }
            let mut m = Map::new();
            for k in ["name", "namespace"] {
                if let Some(v) = applied.pointer(&format!("/metadata/{k}")) {
                    m.insert(k.into(), v.clone());
                }
            }
            only.insert("metadata".into(), Value::Object(m));
            applied = Value::Object(only);
        }
        None => {
            if def.status_subresource
                && let Some(m) = applied.as_object_mut()
                && let Some(status) = m.remove("status")
            {
                status_dropped = Some(status);
            }
        }
    }
    // The configuration keeps the namespace it was sent with (often none): the real server
    // names the object in typed-patch errors from the body as sent, e.g. `(/w1; ...)`.
    // `prepare_create` fills the namespace from the path; an update keeps the live one.
    let mut store = ctx.shared.lock();
    let old = store.get(&def.storage, ns, name);
    let live = old.as_ref().map(|o| present(def, o));
    if live.is_none() && sub.is_some() {
        return Err(ApiError::not_found(def.what(), name));
    }
    // The real server types the whole configuration before it resets status: a status that
    // cannot be typed (duplicate list-map keys) fails the apply with 500 all the same.
    if let Some(status) = status_dropped {
        let mut whole = applied.clone();
        whole["status"] = status;
        if let Err(e) = apply::apply(ApplyRequest {
            live: None,
            applied: &whole,
            manager: &manager,
            subresource: None,
            force: true,
            schema: schema_of(def),
            now: &ctx.now,
        }) && e.code() == 500
        {
            return Err(apply_error(e));
        }
    }
    let result = apply::apply(ApplyRequest {
        live: live.as_ref(),
        applied: &applied,
        manager: &manager,
        subresource: sub,
        force,
        schema: schema_of(def),
        now: &ctx.now,
    })
    .map_err(apply_error)?;
    let (code, stored, more_warnings) = match old {
        None => {
            check_namespace(&store, def, ns, name)?;
            let prepared = prepare_create(
                &store,
                ctx,
                def,
                ns,
                result,
                Managed::Applied,
                FieldValidation::Ignore,
            )?;
            let stored = if ctx.dry_run() {
                Arc::new(prepared.obj)
            } else {
                commit_create(&mut store, def, prepared.obj, &ctx.now)?
            };
            (201, stored, prepared.warnings)
        }
        Some(old) => {
            let prepared = prepare_update(
                ctx,
                def,
                &old,
                result,
                sub,
                Managed::Applied,
                FieldValidation::Ignore,
                &store,
            )?;
            let stored = store_update(ctx, &mut store, def, &old, prepared.obj);
            (200, stored, prepared.warnings)
        }
    };
    warnings.extend(more_warnings);
    Ok(written(ctx, def, store, code, &stored, &warnings))
}

/// The Status of a failed apply: 409 Conflict with only `causes` in `details` (as the real
/// server answers), or the code [`ApplyError::code`] gives (400, or 500 for `failed to create
/// typed patch object ...`).
pub(crate) fn apply_error(e: ApplyError) -> ApiError {
    match &e {
        ApplyError::Conflicts(_) => ApiError::new(409, "Conflict", e.to_string())
            .with_details(json!({"causes": e.causes()})),
        ApplyError::Invalid(_) => match e.code() {
            // A plain Go error: ErrorToAPIStatus gives 500 with reason Unknown (omitted).
            500 => ApiError::new(500, "", e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        },
    }
}
