"""botocore's data files, loaded without what the relay never reads.

botocore keeps every data file it loads for the life of the process: for one S3 client,
the endpoints of every AWS service in every partition (6.6 MiB of Python objects), the
S3 model with its documentation (2.9 MiB) and S3's endpoint rules (1.0 MiB), all in
OrderedDicts. On a gateway that must stay under 100 MiB with 128 cameras that is a tenth
of the budget. Loaded as plain dicts (ordered too, since Python 3.7), with empty
documentation strings, and with the endpoints of only the services a relay talks to,
they take about 2 MiB.
"""

from __future__ import annotations

import json
import os
from typing import Any

from botocore.loaders import JSONFileLoader, Loader, create_loader

# Endpoint prefixes of the services a relay's clients reach: S3 itself, and those the
# standard credential chain may call (STS for assumed roles and web identity, IAM
# Identity Center's portal and OIDC for SSO profiles).
SERVICES = frozenset({"s3", "sts", "portal.sso", "oidc"})


class LeanFileLoader(JSONFileLoader):  # type: ignore[misc]
    # _load_file is botocore's private parse step (listed in relay._compat's reaches).
    def _load_file(self, full_path: str, open_method: Any) -> Any:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as fp:
            data = json.loads(fp.read().decode("utf-8"))
        name = os.path.basename(full_path).split(".")[0]
        if name == "endpoints":
            return only_services(data, SERVICES)
        if name == "service-2":
            return without_documentation(data)
        return data


def only_services(endpoints: dict[str, Any], keep: frozenset[str]) -> dict[str, Any]:
    """endpoints.json with the services of each partition cut to ``keep``."""
    for partition in endpoints.get("partitions", []):
        services = partition.get("services", {})
        partition["services"] = {name: services[name] for name in services if name in keep}
    return endpoints


def without_documentation(model: Any) -> Any:
    """A service model with its documentation strings emptied (botocore reads some of
    the keys, e.g. a client context parameter's; the text only help() shows)."""
    if isinstance(model, dict):
        if isinstance(model.get("documentation"), str):  # not a member named so
            model["documentation"] = ""
        for value in model.values():
            without_documentation(value)
    elif isinstance(model, list):
        for value in model:
            without_documentation(value)
    return model


def lean_loader(session: Any) -> Loader:
    """A data loader for ``session`` (a botocore session) with its usual search path."""
    loader = create_loader(session.get_config_variable("data_path"))
    loader.file_loader = LeanFileLoader()
    return loader
