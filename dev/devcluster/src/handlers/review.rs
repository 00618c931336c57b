//! Authorization reviews: SelfSubjectAccessReview and SelfSubjectRulesReview against the RBAC
//! authorizer.

use super::*;

pub(crate) fn self_subject_access_review(ctx: &Ctx) -> Result<Response<Body>> {
    let mut obj = body_json(ctx)?;
    let ra = obj.pointer("/spec/resourceAttributes").cloned();
    let nra = obj.pointer("/spec/nonResourceAttributes").cloned();
    let s = |v: &Option<Value>, k: &str| -> String {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let attrs = if ra.is_some() {
        Attributes {
            user: ctx.user.clone(),
            verb: s(&ra, "verb"),
            api_group: s(&ra, "group"),
            resource: s(&ra, "resource"),
            subresource: s(&ra, "subresource"),
            namespace: s(&ra, "namespace"),
            name: s(&ra, "name"),
            resource_request: true,
            path: String::new(),
        }
    } else if nra.is_some() {
        Attributes {
            user: ctx.user.clone(),
            verb: s(&nra, "verb"),
            resource_request: false,
            path: s(&nra, "path"),
            ..Default::default()
        }
    } else {
        return Err(ApiError::invalid(
            "SelfSubjectAccessReview",
            "authorization.k8s.io",
            "",
            &[FieldError::required(
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )],
        ));
    };
    let decision = ctx.shared.policy().authorize_with_reason(&attrs);
    obj["status"] = if decision.reason.is_empty() {
        json!({"allowed": decision.allowed})
    } else {
        json!({"allowed": decision.allowed, "reason": decision.reason})
    };
    if let Some(m) = meta::meta_mut(&mut obj) {
        m.insert("creationTimestamp".into(), Value::Null);
    }
    Ok(json_response(201, &obj, &[]))
}

pub(crate) fn self_subject_rules_review(ctx: &Ctx) -> Result<Response<Body>> {
    let mut obj = body_json(ctx)?;
    let ns = str_at(&obj, "/spec/namespace").to_string();
    obj["status"] = ctx.shared.policy().rules_for(&ctx.user, &ns);
    if let Some(m) = meta::meta_mut(&mut obj) {
        m.insert("creationTimestamp".into(), Value::Null);
    }
    Ok(json_response(201, &obj, &[]))
}
