//! Deletes: delete options (preconditions, propagation, grace), finalizers, deletecollection.

use super::*;

#[derive(Debug, Default, Clone)]
pub(crate) struct DeleteOptions {
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

pub(crate) fn delete_options(ctx: &Ctx) -> Result<DeleteOptions> {
    let mut o = DeleteOptions {
        propagation: ctx.q("propagationPolicy").map(str::to_string),
        dry_run: ctx.dry_run(),
        ..Default::default()
    };
    if let Some(orphan) = ctx.q("orphanDependents")
        && o.propagation.is_none()
    {
        o.propagation = Some(
            if orphan == "true" {
                "Orphan"
            } else {
                "Background"
            }
            .to_string(),
        );
    }
    if !ctx.body.is_empty() {
        let v: Value = if ctx.content_type() == "application/vnd.kubernetes.protobuf" {
            crate::protobuf::decode(&ctx.body)
                .ok_or_else(|| ApiError::bad_request("error decoding DeleteOptions"))?
        } else {
            serde_json::from_slice(&ctx.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        };
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.to_string());
        }
        if o.propagation.is_none()
            && let Some(b) = v.get("orphanDependents").and_then(Value::as_bool)
        {
            o.propagation = Some(if b { "Orphan" } else { "Background" }.to_string());
        }
        if let Some(u) = v.pointer("/preconditions/uid").and_then(Value::as_str) {
            o.uid = Some(u.to_string());
        }
        if let Some(r) = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            o.resource_version = Some(r.to_string());
        }
        if v.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            o.dry_run = true;
        }
    }
    if let Some(p) = &o.propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid(
            "DeleteOptions",
            "meta.k8s.io",
            "",
            &[FieldError::not_supported(
                "propagationPolicy",
                Value::String(p.clone()),
                &["Foreground", "Background", "Orphan", "nil"].map(String::from),
            )],
        ));
    }
    Ok(o)
}

/// Result of deleting one object.
pub(crate) enum Deleted {
    /// Removed from storage (the final state).
    Gone(Arc<Value>),
    /// Still present, waiting for finalizers.
    Pending(Arc<Value>),
}

/// Deletes one object with the apiserver's finalizer semantics.
pub(crate) fn delete_object(
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    propagation: Option<&str>,
    now: &str,
    dry_run: bool,
) -> Option<Result<Arc<Value>, Arc<Value>>> {
    let old = store.get(&def.storage, ns, name)?;
    let r = delete_stored(store, def, &old, propagation, now, dry_run);
    Some(match r {
        Deleted::Gone(v) => Ok(v),
        Deleted::Pending(v) => Err(v),
    })
}

pub(crate) fn delete_stored(
    store: &mut Store,
    def: &ResourceDef,
    old: &Arc<Value>,
    propagation: Option<&str>,
    now: &str,
    dry_run: bool,
) -> Deleted {
    let (ns, name) = crate::store::key_of(old);
    let mut obj = (**old).clone();
    let mut fins = meta::finalizers(&obj);
    match propagation {
        Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
        Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
            fins.push("foregroundDeletion".into())
        }
        _ => {}
    }
    if def.flavor == Flavor::Crd {
        // The apiextensions server adds its cleanup finalizer and a Terminating condition;
        // the instances are deleted in the background, then the CRD.
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            if let Some(m) = meta::meta_mut(&mut obj) {
                m.insert("deletionTimestamp".into(), json!(now));
            }
            if !fins.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                fins.push(CRD_CLEANUP_FINALIZER.to_string());
            }
            meta::set_finalizers(&mut obj, &fins);
            let mut conditions: Vec<Value> = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conditions.retain(|c| str_at(c, "/type") != "Terminating");
            conditions.push(json!({
                "type": "Terminating", "status": "True", "lastTransitionTime": now,
                "reason": "InstanceDeletionPending",
                "message": "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
            }));
            obj["status"]["conditions"] = json!(conditions);
            if dry_run {
                return Deleted::Pending(Arc::new(obj));
            }
            store.gc_dirty = true;
            return Deleted::Pending(store.put(&def.storage, obj));
        }
    }
    if def.flavor == Flavor::Namespace {
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            if let Some(m) = meta::meta_mut(&mut obj) {
                m.insert("deletionTimestamp".into(), json!(now));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            obj["status"] = json!({"phase": "Terminating"});
            meta::set_finalizers(&mut obj, &fins);
            if dry_run {
                return Deleted::Pending(Arc::new(obj));
            }
            store.gc_dirty = true;
            return Deleted::Pending(store.put(&def.storage, obj));
        }
        return Deleted::Pending(old.clone());
    }
    if fins.is_empty() {
        if dry_run {
            return Deleted::Gone(old.clone());
        }
        if def.flavor == Flavor::Crd {
            remove_crd(store, &name);
        }
        return match store.remove(&def.storage, &ns, &name) {
            Some(v) => Deleted::Gone(v),
            None => Deleted::Gone(old.clone()),
        };
    }
    let already = obj.pointer("/metadata/deletionTimestamp").is_some();
    if already && fins == meta::finalizers(old) {
        return Deleted::Pending(old.clone());
    }
    if !already && let Some(m) = meta::meta_mut(&mut obj) {
        m.insert("deletionTimestamp".into(), json!(now));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
    }
    meta::set_finalizers(&mut obj, &fins);
    if dry_run {
        return Deleted::Pending(Arc::new(obj));
    }
    store.gc_dirty = true;
    Deleted::Pending(store.put(&def.storage, obj))
}

pub(crate) fn success_status(def: &ResourceDef, obj: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": str_at(obj, "/metadata/name"),
            "group": if def.group.is_empty() { Value::Null } else { json!(def.group) },
            "kind": def.plural,
            "uid": str_at(obj, "/metadata/uid"),
        },
    })
}

pub(crate) fn delete(ctx: &Ctx, def: &ResourceDef, ns: &str, name: &str) -> Result<Response<Body>> {
    let opts = delete_options(ctx)?;
    let mut store = ctx.shared.lock();
    let old = store
        .get(&def.storage, ns, name)
        .ok_or_else(|| ApiError::not_found(def.what(), name))?;
    if let Some(uid) = &opts.uid {
        let actual = str_at(&old, "/metadata/uid");
        if uid != actual {
            return Err(ApiError::conflict(
                def.what(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        let actual = str_at(&old, "/metadata/resourceVersion");
        if rv != actual {
            return Err(ApiError::conflict(
                def.what(),
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    let r = delete_stored(
        &mut store,
        def,
        &old,
        opts.propagation.as_deref(),
        &ctx.now,
        opts.dry_run,
    );
    let rv = store.rv.to_string();
    drop(store);
    let body = match r {
        Deleted::Pending(v) => render_one(ctx, def, &v, &rv),
        Deleted::Gone(v) => {
            // Stores with ReturnDeletedObject (namespaces, serviceaccounts) answer with the
            // object; every other store answers a Status naming the deleted object.
            if def.flavor == Flavor::Namespace || def.kind == "ServiceAccount" {
                render_one(ctx, def, &v, &rv)
            } else {
                success_status(def, &v)
            }
        }
    };
    Ok(json_response(200, &body, &[]))
}

pub(crate) fn delete_collection(ctx: &Ctx, def: &ResourceDef, ns: &str) -> Result<Response<Body>> {
    let opts = delete_options(ctx)?;
    let selectors = Selectors::parse(def, &ctx.query)?;
    let mut store = ctx.shared.lock();
    let ns_filter = if ns.is_empty() { None } else { Some(ns) };
    let mut targets = Vec::new();
    let _ = store.scan(&def.storage, ns_filter, None, None, |_, v| {
        if selectors.matches(def, v) {
            targets.push(v.clone());
        }
        true
    });
    let mut items = Vec::new();
    for old in targets {
        match delete_stored(
            &mut store,
            def,
            &old,
            opts.propagation.as_deref(),
            &ctx.now,
            opts.dry_run,
        ) {
            Deleted::Gone(v) | Deleted::Pending(v) => items.push(present(def, &v)),
        }
    }
    let rv = store.rv.to_string();
    drop(store);
    Ok(json_response(
        200,
        &json!({
            "apiVersion": def.api_version(),
            "kind": format!("{}List", def.kind),
            "metadata": {"resourceVersion": rv},
            "items": items,
        }),
        &[],
    ))
}
