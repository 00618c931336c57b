//! The runbook's demo objects as values, for tests, the demo and examples (the YAML forms are
//! in `k8s/samples/`).

use crate::{Artifact, ArtifactType, EnvVar, Execution, ExecutionBackend, ProcessTemplateSpec};

/// The template of the runbook's `demo-logger` deployment: `alpine:3.19` in a container,
/// `/bin/sh -c "echo hello from ${APOLLO_DEVICE_NAME}; sleep 3600"`, with
/// `APOLLO_DEVICE_NAME=${APOLLO_DEVICE_NAME}` (expanded on the device, not by the controller).
pub fn demo_logger_template() -> ProcessTemplateSpec {
    shell_template(
        "echo hello from ${APOLLO_DEVICE_NAME}; sleep 3600",
        vec![EnvVar {
            name: "APOLLO_DEVICE_NAME".into(),
            value: "${APOLLO_DEVICE_NAME}".into(),
        }],
    )
}

/// A DeviceProcess spec for `device`: `alpine:3.19` in a container running
/// `/bin/sh -c <script>`, no environment (tests and examples vary `script` to change the spec
/// hash).
pub fn shell_process(device: &str, script: &str) -> crate::DeviceProcessSpec {
    shell_template(script, Vec::new()).for_device(device)
}

/// `alpine:3.19` in a container running `/bin/sh -c <script>` with `env`.
fn shell_template(script: &str, env: Vec<EnvVar>) -> ProcessTemplateSpec {
    ProcessTemplateSpec {
        artifact: Artifact {
            type_: ArtifactType::Oci,
            url: "alpine:3.19".into(),
        },
        execution: Execution {
            backend: ExecutionBackend::Container,
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec![script.into()],
            env,
        },
    }
}
