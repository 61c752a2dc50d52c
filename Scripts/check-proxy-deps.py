#!/usr/bin/env python3
"""The sidecar links no Kubernetes client: mesh-proxy's targets, followed through the package's own targets,
depend on none of MeshKube, MeshKubeLocal, MeshDestination, AsyncHTTPClient or Yams. Reads
`swift package describe --type json`; exits 1 naming the path to what it must not depend on."""
import json
import subprocess
import sys

FORBIDDEN = {"MeshKube", "MeshKubeLocal", "MeshDestination", "AsyncHTTPClient", "Yams"}
ROOT = "mesh-proxy"

description = json.loads(subprocess.run(
    ["swift", "package", "describe", "--type", "json"], check=True, capture_output=True, text=True).stdout)
targets = {t["name"]: t for t in description["targets"]}
paths = {ROOT: [ROOT]}
queue = [ROOT]
problems = []
while queue:
    name = queue.pop()
    target = targets[name]
    for dependency in target.get("target_dependencies", []) + target.get("product_dependencies", []):
        path = paths[name] + [dependency]
        if dependency in FORBIDDEN:
            problems.append(" -> ".join(path))
        if dependency in targets and dependency not in paths:
            paths[dependency] = path
            queue.append(dependency)
if problems:
    print("mesh-proxy must not link the Kubernetes client or the destination service:", file=sys.stderr)
    for problem in problems:
        print("  " + problem, file=sys.stderr)
    sys.exit(1)
print(f"mesh-proxy depends on {len(paths) - 1} of the package's targets, none of {', '.join(sorted(FORBIDDEN))}")
