"""Keep secrets out of the bundle: strip them from the plan, reference them by name, and check the output.

The bundle only ever names a secret (a Kubernetes `secretKeyRef`, a SkyPilot `secrets:` key); values stay with the
operator. Two layers: `redact_plan` removes secret-looking env vars and flags a planner may have copied from a
benchmark run, and `assert_no_secret_values` refuses to write a bundle in which any secret value of this process's
environment appears.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from vlmopt.schemas import Plan, ServerArgs

from ._common import EmitError

_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSW(OR)?D|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|_KEY$)", re.I)
# Flags whose value is a credential (vLLM: --api-key; HF hub auth for some loaders: --hf-token).
_SECRET_FLAGS = ("--api-key", "--hf-token")
# Env values shorter than this are too likely to collide with ordinary text ("1", "true") to scan for.
_MIN_SCANNED_SECRET_LEN = 8

# Env vars the serving pods receive from Secrets, never as literals.
SECRET_ENV_NAMES = ("HF_TOKEN", "VLLM_API_KEY")


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redact_server_args(args: ServerArgs) -> ServerArgs:
    """Drop secret env vars and `--api-key`/`--hf-token` (with their values) from the arguments."""
    env = {k: v for k, v in args.env.items() if not is_secret_name(k)}
    extra: list[str] = []
    skip_next = False
    for item in args.extra_args:
        if skip_next:
            skip_next = False
            continue
        flag = item.split("=", 1)[0]
        if flag in _SECRET_FLAGS:
            skip_next = "=" not in item
            continue
        extra.append(item)
    if env == args.env and extra == args.extra_args:
        return args
    return args.model_copy(update={"env": env, "extra_args": extra})


def redact_plan(plan: Plan) -> Plan:
    """A copy of the plan whose replicas carry no secret env var or flag (plan.json is part of the bundle)."""
    groups = []
    for group in plan.node_groups:
        replicas = [
            r.model_copy(update={"server_args": redact_server_args(r.server_args)}) for r in group.gpu_layout.replicas
        ]
        groups.append(
            group.model_copy(update={"gpu_layout": group.gpu_layout.model_copy(update={"replicas": replicas})})
        )
    return plan.model_copy(update={"node_groups": groups})


def secret_values_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Secret-named variables of the environment with values long enough to scan for: name -> value."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if is_secret_name(k) and len(v) >= _MIN_SCANNED_SECRET_LEN}


def assert_no_secret_values(files: Mapping[str, str], environ: Mapping[str, str] | None = None) -> None:
    """Raise EmitError naming the file and the variable (never the value) if a secret value leaked into a file."""
    secrets = secret_values_from_env(environ)
    for path, text in files.items():
        for name, value in secrets.items():
            if value in text:
                raise EmitError(
                    f"{path}: contains the value of the secret environment variable {name}; refusing to write"
                )
