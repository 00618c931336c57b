//! Writes, before and after the store: the typed and structural pipelines (decoding, pruning,
//! defaulting, validation, ratcheting), create- and update-time preparation, and committing to the
//! store.

use super::*;

/// How managedFields are maintained for a write.
#[derive(Clone, Copy)]
pub(crate) enum Managed<'a> {
    /// Non-apply write by this manager.
    Update(&'a str),
    /// Already computed by server-side apply.
    Applied,
}

pub(crate) struct Prepared {
    pub(crate) obj: Value,
    pub(crate) warnings: Vec<String>,
}

pub(crate) fn schema_of(def: &ResourceDef) -> Option<&Structural> {
    def.schema.as_deref()
}

pub(crate) fn invalid(def: &ResourceDef, name: &str, errs: Vec<FieldError>) -> ApiError {
    ApiError::invalid(&def.kind, &def.group, name, &errs)
}

/// events.k8s.io/v1 validates the internal (core) Event, so the 422 names the kind plain
/// `Event "x.1" is invalid: ...` without the group, as a v1.36 server answers.
pub(crate) fn events_invalid(name: &str, errs: Vec<FieldError>) -> ApiError {
    ApiError::invalid("Event", "", name, &errs)
}

pub(crate) fn strict_error(def: &ResourceDef, removed: &[String]) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {}",
        def.kind,
        def.version,
        def.kind,
        schema::strict_decoding_message(removed)
    ))
}

/// Decoding into the typed struct of a built-in kind (and typed `metadata` for custom
/// resources): unknown fields per `fieldValidation`, wrong JSON types are 400.
pub(crate) fn typed_pipeline(
    ctx: &Ctx,
    def: &ResourceDef,
    obj: &mut Value,
    mode: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let checked = match def.flavor {
        Flavor::Generic | Flavor::Namespace | Flavor::CoreEvent | Flavor::EventsV1 => {
            crate::typed::check_builtin(&def.kind, &def.group, obj)
        }
        Flavor::Custom => crate::typed::check_metadata(obj),
        // Fields of the CRD API that the pretended minor lacks (`--version 1.29`).
        Flavor::Crd => Ok(ctx.shared.opts.version.gate_crd(obj)),
        _ => Ok(Vec::new()),
    };
    let removed = checked.map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            def.kind, def.version, def.kind
        ))
    })?;
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
    }
    Ok(())
}

/// Structural pruning, defaulting and validation of a custom resource: `old` is the stored
/// object of an update (validation ratcheting), `sub` the subresource (`/status` writes
/// validate only status, as the real status strategy does).
pub(crate) fn schema_pipeline(
    def: &ResourceDef,
    obj: &mut Value,
    old: Option<&Value>,
    sub: Option<&str>,
    mode: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let Some(schema) = schema_of(def) else {
        return Ok(());
    };
    let removed = schema.prune(obj);
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
    }
    schema.apply_defaults(obj);
    let status = sub == Some("status");
    let errors = match (old, status) {
        (None, false) => schema.validate(obj),
        (None, true) => schema.validate_status(obj),
        (Some(old), false) => schema.validate_update(old, obj),
        (Some(old), true) => schema.validate_status_update(old, obj),
    };
    if !errors.is_empty() {
        let name = str_at(obj, "/metadata/name").to_string();
        return Err(invalid(def, &name, errors));
    }
    Ok(())
}

pub(crate) fn name_errors(def: &ResourceDef, name: &str, generate: bool) -> Vec<FieldError> {
    let (field, errs) = if generate {
        let label = def.flavor == Flavor::Namespace;
        (
            "metadata.generateName",
            meta::generate_name_errors(name, label),
        )
    } else {
        let errs = match def.flavor {
            Flavor::CoreEvent => Vec::new(),
            Flavor::Namespace => messages::dns1123_label_errors(name),
            Flavor::Generic if def.group == "rbac.authorization.k8s.io" => {
                if name.contains('/') || name.contains('%') || name == "." || name == ".." {
                    vec!["may not contain '/' or '%'".to_string()]
                } else {
                    Vec::new()
                }
            }
            _ => messages::dns1123_subdomain_errors(name, LenUnit::Characters),
        };
        ("metadata.name", errs)
    };
    errs.into_iter()
        .map(|m| FieldError::invalid(field, Value::String(name.to_string()), m))
        .collect()
}

/// Namespace must exist and not be terminating for creates.
pub(crate) fn check_namespace(
    store: &Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
) -> Result<()> {
    if !def.namespaced {
        return Ok(());
    }
    match store.get("namespaces", "", ns) {
        None => Err(ApiError::not_found(
            crate::status::What {
                group: "",
                resource: "namespaces",
            },
            ns,
        )),
        Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::forbidden(
            format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                def.what().qualified(),
                name,
                ns
            ),
            def.what(),
            name,
        )
        .with_details(json!({"name": name, "group": def.group, "kind": def.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}))),
        Some(_) => Ok(()),
    }
}

/// Creating instances of a CRD that is being deleted is refused.
pub(crate) fn check_crd_not_terminating(store: &Store, def: &ResourceDef) -> Result<()> {
    if !def.is_custom() {
        return Ok(());
    }
    let terminating = store
        .get(
            "customresourcedefinitions.apiextensions.k8s.io",
            "",
            &def.storage,
        )
        .is_some_and(|crd| crd.pointer("/metadata/deletionTimestamp").is_some());
    if terminating {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "create not allowed while custom resource definition is terminating",
        )
        .with_details(json!({})));
    }
    Ok(())
}

pub(crate) fn strip_system_fields(obj: &mut Value) {
    if let Some(m) = meta::meta_mut(obj) {
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
}

/// Create-time preparation of a body in the endpoint's form; returns the storage form.
pub(crate) fn prepare_create(
    store: &Store,
    ctx: &Ctx,
    def: &ResourceDef,
    ns: &str,
    mut obj: Value,
    managed: Managed<'_>,
    mode: FieldValidation,
) -> Result<Prepared> {
    let mut warnings = Vec::new();
    typed_pipeline(ctx, def, &mut obj, mode, &mut warnings)?;
    {
        let m = meta::meta_mut(&mut obj).ok_or_else(|| ApiError::bad_request("object expected"))?;
        if def.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        if m.get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        m.remove("resourceVersion");
    }
    let mut name = str_at(&obj, "/metadata/name").to_string();
    let generate = str_at(&obj, "/metadata/generateName").to_string();
    if name.is_empty() {
        if generate.is_empty() {
            return Err(invalid(
                def,
                "",
                vec![FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        let mut errs = if def.flavor == Flavor::CoreEvent {
            Vec::new()
        } else {
            name_errors(def, &generate, true)
        };
        name = meta::generate_name(&generate);
        errs.extend(name_errors(def, &name, false));
        if !errs.is_empty() {
            return Err(invalid(def, &name, errs));
        }
        if let Some(m) = meta::meta_mut(&mut obj) {
            m.insert("name".into(), json!(name));
        }
    } else {
        let mut errs = name_errors(def, &name, false);
        if !generate.is_empty() && def.flavor != Flavor::CoreEvent {
            errs.extend(name_errors(def, &generate, true));
        }
        if !errs.is_empty() {
            return Err(invalid(def, &name, errs));
        }
    }
    strip_system_fields(&mut obj);
    if def.flavor != Flavor::CoreEvent {
        let errs = meta::object_meta_errors(&obj);
        if !errs.is_empty() {
            return Err(invalid(def, &name, errs));
        }
    }
    if matches!(managed, Managed::Update(_))
        && let Some(m) = meta::meta_mut(&mut obj)
    {
        m.remove("managedFields");
    }
    if let Some(m) = meta::meta_mut(&mut obj) {
        m.insert("uid".into(), json!(meta::uid()));
        m.insert("creationTimestamp".into(), json!(ctx.now));
        if def.has_generation() {
            m.insert("generation".into(), json!(1));
        }
    }
    match def.flavor {
        Flavor::Custom => {
            if def.status_subresource
                && let Some(m) = obj.as_object_mut()
            {
                m.remove("status");
            }
            schema_pipeline(def, &mut obj, None, None, mode, &mut warnings)?;
        }
        Flavor::EventsV1 => {
            let core = events::v1_to_core(&obj);
            let errs = events::validate(&core, true);
            if !errs.is_empty() {
                return Err(events_invalid(&name, errs));
            }
            obj = core;
        }
        Flavor::CoreEvent => {
            events::normalize_core(&mut obj);
            let errs = events::validate(&obj, false);
            if !errs.is_empty() {
                return Err(invalid(def, &name, errs));
            }
        }
        Flavor::Namespace => {
            if let Some(m) = obj.as_object_mut() {
                m.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
                m.insert("status".into(), json!({"phase": "Active"}));
            }
            if let Some(m) = meta::meta_mut(&mut obj) {
                let labels = m.entry("labels").or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
        }
        Flavor::Crd => {
            registry::default_crd(&mut obj);
            registry::crd_defs(&obj).map_err(|p| invalid(def, &name, p))?;
            let stored: Vec<Value> = obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .filter_map(|v| v.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(m) = obj.as_object_mut() {
                m.insert(
                    "status".into(),
                    json!({"conditions": [], "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": stored}),
                );
            }
        }
        Flavor::Generic => {
            if def.status_subresource
                && let Some(m) = obj.as_object_mut()
            {
                m.remove("status");
            }
            generic_defaults(def, &mut obj);
            workloads::create_defaults(&def.group, &def.kind, &mut obj, store)
                .map_err(|errs| invalid(def, &name, errs))?;
        }
        Flavor::SelfSubjectAccessReview | Flavor::SelfSubjectRulesReview => {}
    }
    set_type(&mut obj, storage_def(store, def).as_deref().unwrap_or(def));
    if let Managed::Update(manager) = managed {
        apply::record_update(None, &mut obj, manager, None, schema_of(def), &ctx.now);
    }
    Ok(Prepared { obj, warnings })
}

/// The def whose apiVersion objects are stored with (core events for the events.k8s.io view).
pub(crate) fn storage_def(store: &Store, def: &ResourceDef) -> Option<Arc<ResourceDef>> {
    if def.flavor == Flavor::EventsV1 {
        store.registry.lookup("", "v1", "events")
    } else {
        None
    }
}

/// Defaults of simple built-ins (Secret stringData → data, type Opaque).
pub(crate) fn generic_defaults(def: &ResourceDef, obj: &mut Value) {
    if def.kind == "Secret"
        && let Some(m) = obj.as_object_mut()
    {
        if let Some(Value::Object(sd)) = m.remove("stringData") {
            let data = m.entry("data").or_insert_with(|| json!({}));
            if let Some(d) = data.as_object_mut() {
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or("").to_string();
                    d.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(s)),
                    );
                }
            }
        }
        if m.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            m.insert("type".into(), json!("Opaque"));
        }
    }
}

/// Update-time preparation: `new` in the endpoint's form; returns the storage form.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare_update(
    ctx: &Ctx,
    def: &ResourceDef,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
    managed: Managed<'_>,
    mode: FieldValidation,
    store: &Store,
) -> Result<Prepared> {
    let mut warnings = Vec::new();
    let name = str_at(old, "/metadata/name").to_string();
    typed_pipeline(ctx, def, &mut new, mode, &mut warnings)?;
    if def.flavor == Flavor::EventsV1 {
        new = events::v1_to_core(&new);
    }
    // The status subresource: only status from a /status write, never status from the main one.
    let status_sub = def.status_subresource;
    if sub == Some("status") {
        let mut merged = old.clone();
        if let Some(m) = merged.as_object_mut() {
            match new.get("status") {
                Some(s) => {
                    m.insert("status".into(), s.clone());
                }
                None => {
                    m.remove("status");
                }
            }
        }
        if let (Some(mf), Some(m)) = (
            new.pointer("/metadata/managedFields").cloned(),
            meta::meta_mut(&mut merged),
        ) && matches!(managed, Managed::Applied)
        {
            m.insert("managedFields".into(), mf);
        }
        new = merged;
    } else if status_sub {
        if let Some(m) = new.as_object_mut() {
            match old.get("status") {
                Some(s) => {
                    m.insert("status".into(), s.clone());
                }
                None => {
                    m.remove("status");
                }
            }
        }
        if def.flavor == Flavor::Namespace
            && let (Some(m), Some(spec)) = (new.as_object_mut(), old.get("spec"))
        {
            m.insert("spec".into(), spec.clone());
        }
    }
    // Identity and system fields come from the stored object.
    {
        let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
        let m = meta::meta_mut(&mut new).ok_or_else(|| ApiError::bad_request("object expected"))?;
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(k) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
        m.remove("selfLink");
        if let Managed::Update(_) = managed {
            match old_meta.get("managedFields") {
                Some(v) => {
                    m.insert("managedFields".into(), v.clone());
                }
                None => {
                    m.remove("managedFields");
                }
            }
        }
    }
    if def.flavor != Flavor::CoreEvent {
        let errs = meta::object_meta_errors(&new);
        if !errs.is_empty() {
            return Err(invalid(def, &name, errs));
        }
    }
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let old_f = meta::finalizers(old);
        let added: Vec<String> = meta::finalizers(&new)
            .into_iter()
            .filter(|f| !old_f.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(invalid(
                def,
                &name,
                vec![FieldError::forbidden(
                    "metadata.finalizers",
                    format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{}\"}}",
                        added.join("\", \"")
                    ),
                )],
            ));
        }
    }
    match def.flavor {
        Flavor::Custom => schema_pipeline(def, &mut new, Some(old), sub, mode, &mut warnings)?,
        Flavor::EventsV1 => {
            events::normalize_core(&mut new);
            let errs = events::validate_update(&new, old, true);
            if !errs.is_empty() {
                return Err(events_invalid(&name, errs));
            }
        }
        Flavor::CoreEvent => {
            events::normalize_core(&mut new);
            let errs = events::validate_update(&new, old, false);
            if !errs.is_empty() {
                return Err(invalid(def, &name, errs));
            }
        }
        Flavor::Crd => {
            registry::default_crd(&mut new);
            registry::crd_defs(&new).map_err(|p| invalid(def, &name, p))?;
            let mut errs = Vec::new();
            for (ptr, field) in [("/spec/group", "spec.group"), ("/spec/scope", "spec.scope")] {
                let (o, n) = (str_at(old, ptr), str_at(&new, ptr));
                if o != n {
                    errs.push(FieldError::invalid(
                        field,
                        Value::String(n.to_string()),
                        "field is immutable",
                    ));
                }
            }
            if !errs.is_empty() {
                return Err(invalid(def, &name, errs));
            }
        }
        Flavor::Generic => {
            generic_defaults(def, &mut new);
            workloads::update_defaults(&def.group, &def.kind, old, &mut new, store)
                .map_err(|errs| invalid(def, &name, errs))?;
        }
        _ => {}
    }
    set_type(&mut new, storage_def(store, def).as_deref().unwrap_or(def));
    if let Managed::Update(manager) = managed {
        apply::record_update(Some(old), &mut new, manager, sub, schema_of(def), &ctx.now);
    }
    if def.has_generation() {
        let drop_status = status_sub;
        let changed = if workloads::is_deployment(&def.group, &def.kind) {
            workloads::deployment_generation_changes(old, &new)
        } else {
            meta::without_meta(old, drop_status) != meta::without_meta(&new, drop_status)
        };
        if changed {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if let Some(m) = meta::meta_mut(&mut new) {
                m.insert("generation".into(), json!(g + 1));
            }
        }
    }
    Ok(Prepared { obj: new, warnings })
}

/// Commits a create; runs CRD registration.
pub(crate) fn commit_create(
    store: &mut Store,
    def: &ResourceDef,
    obj: Value,
    now: &str,
) -> Result<Arc<Value>> {
    let (ns, name) = crate::store::key_of(&obj);
    if store.get(&def.storage, &ns, &name).is_some() {
        return Err(ApiError::already_exists(def.what(), &name));
    }
    let stored = store.put(&def.storage, obj);
    if def.flavor == Flavor::Crd {
        sync_crd(store, &stored, now);
    }
    Ok(stored)
}

/// Commits an update; a no-op keeps the resourceVersion; removing the last finalizer of an
/// object being deleted deletes it.
/// Stores a prepared update, or only returns it for a dry run.
pub(crate) fn store_update(
    ctx: &Ctx,
    store: &mut Store,
    def: &ResourceDef,
    old: &Arc<Value>,
    obj: Value,
) -> Arc<Value> {
    if ctx.dry_run() {
        Arc::new(obj)
    } else {
        commit_update(store, def, old, obj, &ctx.now)
    }
}

/// The answer to a write: the stored object, rendered as asked, at the store's current
/// resourceVersion (the lock is released before encoding).
pub(crate) fn written(
    ctx: &Ctx,
    def: &ResourceDef,
    store: std::sync::MutexGuard<'_, Store>,
    code: u16,
    stored: &Value,
    warnings: &[String],
) -> Response<Body> {
    let rv = store.rv.to_string();
    drop(store);
    json_response(code, &render_one(ctx, def, stored, &rv), warnings)
}

pub(crate) fn commit_update(
    store: &mut Store,
    def: &ResourceDef,
    old: &Arc<Value>,
    new: Value,
    now: &str,
) -> Arc<Value> {
    if meta::same_object(old, &new) {
        return old.clone();
    }
    let (ns, name) = crate::store::key_of(&new);
    if new.pointer("/metadata/deletionTimestamp").is_some() && meta::finalizers(&new).is_empty() {
        if def.flavor == Flavor::Namespace
            && new
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        {
            return store.put(&def.storage, new);
        }
        if def.flavor == Flavor::Crd {
            remove_crd(store, &name);
        }
        return store
            .remove(&def.storage, &ns, &name)
            .unwrap_or_else(|| Arc::new(new));
    }
    let stored = store.put(&def.storage, new);
    if def.flavor == Flavor::Crd {
        sync_crd(store, &stored, now);
    }
    stored
}
