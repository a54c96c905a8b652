"""``stella-sched preview``: the stream's impact computation, offline, from files."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.output import EXIT_OK, EXIT_REJECTED, UsageError, eprint, print_json
from cli.publish import Batch, collect_files, parse_files

DEFAULT_TENANT = "default"


def _parse(kind: str, paths: list[str], args: argparse.Namespace, tenant: str) -> tuple[Batch, list[Any]]:
    files = collect_files(paths)
    if not files:
        raise UsageError(f"no *.json / *.yaml / *.yml files under {', '.join(paths)}")
    if kind == "sbom" and args.image_digest and len(files) > 1:
        raise UsageError(f"--image-digest names one image but {len(files)} SBOM files were given")
    return parse_files(
        kind,
        files,
        tenant=tenant,
        image_digest=args.image_digest if kind == "sbom" else None,
        repository=args.repository if kind == "sbom" else None,
        observed_at=None,
        kev_ids=frozenset(),
        quiet=True,
    )


def _job_dict(job: Any) -> dict[str, Any]:
    data: dict[str, Any] = job.model_dump(mode="json", by_alias=True)
    return data


def report_of(result: Any, inputs: dict[str, int]) -> dict[str, Any]:
    """Machine-readable preview: inputs counted, jobs per image, per-image explanations."""
    images: dict[str, dict[str, Any]] = {}
    for key in sorted({f"{j.tenant}/{j.image_digest}" for j in result.jobs} | set(result.explanations)):
        lines = result.explanations.get(key, [])
        images[key] = {
            "jobs": [],
            "affected": sorted({line.advisory_id for line in lines if line.status == "affected"}),
            "explanations": [
                {
                    "advisory": line.advisory_id,
                    "package": line.package,
                    "version": line.version,
                    "status": line.status,
                    "reason": line.reason,
                }
                for line in lines
            ],
        }
    for job in result.jobs:
        images[f"{job.tenant}/{job.image_digest}"]["jobs"].append(_job_dict(job))
    return {
        "inputs": inputs,
        "images_loaded": result.images,
        "impacts": result.impacts,
        "late": result.late,
        "jobs": len(result.jobs),
        "impacted_images": sorted(k for k, v in images.items() if v["jobs"]),
        "images": images,
        "notes": list(result.notes),
    }


def _pair(trace: dict[str, Any]) -> dict[str, Any]:
    rng = trace["range"]
    keys = ("kind", "introduced", "fixed", "last_affected", "limit", "listed")
    return {k: rng.get(k) for k in keys}


def add_explain(report: dict[str, Any], evaluations: dict[str, Any]) -> None:
    """``--explain``: per image the reference evaluator's verdict, and for each affected component the
    range event pair containing its version, with the full traces."""
    images = report["images"]
    for key, evaluation in evaluations.items():
        traces = [t.model_dump(mode="json") for t in evaluation.traces]
        if not traces and key not in images:
            continue
        image = images.setdefault(key, {"jobs": [], "affected": [], "explanations": []})
        image["explain"] = {
            "verdict": evaluation.verdict,
            "components": [
                {
                    "purl": t["purl"],
                    "package": t["package"],
                    "version": t["version"],
                    "advisory": t["id"],
                    "outcome": t["outcome"],
                    "pair": _pair(t),
                    "policy": t["policy"]["rule"] + " -> " + t["policy"]["effect"],
                }
                for t in traces
            ],
            "traces": traces,
        }
    report["images"] = dict(sorted(images.items()))


def print_report(report: dict[str, Any]) -> None:
    out = sys.stdout
    inputs = ", ".join(f"{n} {k}" for k, n in report["inputs"].items())
    out.write(
        f"inputs: {inputs}\n"
        f"{report['impacts']} impact(s) -> {report['jobs']} job(s) on "
        f"{len(report['impacted_images'])} of {report['images_loaded']} image(s)"
        + (f", {report['late']} late" if report["late"] else "")
        + "\n"
    )
    if not report["jobs"]:
        out.write("nothing would be re-evaluated: no input touches these images\n")
    for key, image in report["images"].items():
        out.write(f"\nimage {key}\n")
        for job in image["jobs"]:
            out.write(
                f"  job {job['job_id']}  priority={job['priority']}  kind={job['kind']}\n"
                f"      run {job['run_id']}\n"
                f"      window {job['window_start']} .. {job['window_end']}  deadline {job['deadline']}\n"
            )
            for reason in job["reasons"]:
                detail = f": {reason['detail']}" if reason["detail"] else ""
                out.write(f"      because {reason['source']} {reason['id']}{detail}\n")
        if image["explanations"]:
            out.write("  checks:\n")
            for line in image["explanations"]:
                out.write(
                    f"    {line['status']:<18} {line['advisory']:<22} "
                    f"{line['package']}@{line['version']}  ({line['reason']})\n"
                )
        if "explain" in image:
            from cli.explain import trace_lines

            explain = image["explain"]
            out.write(f"  explain: verdict {explain['verdict']}, {len(explain['traces'])} match(es)\n")
            for trace in explain["traces"]:
                out.write("\n".join(trace_lines(trace, "    ")) + "\n")
    for note in report["notes"]:
        out.write(f"note: {note}\n")


def run(args: argparse.Namespace) -> int:
    from streams.preview import preview

    tenant = args.tenant or DEFAULT_TENANT
    parsed: dict[str, list[Any]] = {}
    rejected = []
    for kind, paths in (
        ("sbom", args.sbom),
        ("osv", args.advisory),
        ("vex", args.vex or []),
        ("policy", args.policy or []),
        ("runtime", args.runtime or []),
    ):
        if not paths:
            parsed[kind] = []
            continue
        batch, messages = _parse(kind, paths, args, tenant)
        rejected += batch.rejected
        parsed[kind] = messages
    if rejected:
        for problem in rejected:
            eprint(f"rejected {problem}")
        if any("image_digest" in p.message for p in rejected):
            eprint("hint: the SBOM does not name its image; pass --image-digest sha256:<64 hex>")
        eprint(f"error: {len(rejected)} problem(s) in the input; no preview computed")
        return EXIT_REJECTED
    result = preview(
        parsed["sbom"],
        parsed["osv"],
        parsed["vex"],
        parsed["policy"],
        runtime=parsed["runtime"],
        window=args.window,
    )
    inputs = {
        "inventories": len(parsed["sbom"]),
        "advisories": len(parsed["osv"]),
        "vex_statements": len(parsed["vex"]),
        "policy_changes": len(parsed["policy"]),
        "runtime_events": len(parsed["runtime"]),
    }
    report = report_of(result, inputs)
    if getattr(args, "explain", False):
        from streams.preview import explain_estate

        add_explain(report, explain_estate(parsed["sbom"], parsed["osv"], parsed["vex"], parsed["policy"]))
    if args.json:
        print_json(report)
    else:
        print_report(report)
    return EXIT_OK
