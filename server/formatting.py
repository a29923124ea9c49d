"""What the command line prints: answers, references and statistics as text tables,
or as JSON for machines (``--json``: the wire messages with numbers as numbers)."""

from __future__ import annotations

import json

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def to_plain(message: Message) -> dict:
    """A message as a JSON-ready dict: proto field names, every field present, 64-bit integers
    as numbers (protobuf's JSON mapping writes them as strings), timestamps as RFC 3339."""
    return _numbers(MessageToDict(message, preserving_proto_field_name=True,
                                  always_print_fields_with_no_presence=True), message.DESCRIPTOR)


def _numbers(value: dict, descriptor) -> dict:
    for field in descriptor.fields:
        if field.name not in value:
            continue
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.type in _INT64:
            value[field.name] = ([int(v) for v in value[field.name]] if _repeated(field)
                                 else int(value[field.name]))
        elif field.message_type is not None and not is_map and field.message_type.full_name.startswith("origin."):
            items = value[field.name] if _repeated(field) else [value[field.name]]
            for item in items:
                _numbers(item, field.message_type)
    return value


def _repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def dumps(message: Message, drop: tuple[str, ...] = ()) -> str:
    plain = to_plain(message)
    for path in drop:  # binary fields, e.g. the mask PNG (written with --mask-out instead)
        *parents, last = path.split(".")
        target = plain
        for key in parents:
            target = target.get(key, {})
        target.pop(last, None)
    return json.dumps(plain, indent=2)


def format_answer(name: str, reply) -> str:
    """An ``IdentifyOriginResponse`` as a table: the decision, the candidates, the verdict."""
    decision = f"MATCH ({reply.match_basis})" if reply.match else "no match"
    lines = [f"{name}: {decision} (match score {reply.match_score:.3f}, threshold {reply.match_threshold:.3f}"
             + (f", background {reply.background_score:.3f})" if reply.background_score else ")"),
             f"  {'rank':>4}  {'score':>6}  {'inliers':>7}  {'cover':>5}  {'agree':>5}  {'id':>6}  {'collection':<12} "
             f"{'external_id':<28} source"]
    for rank, cand in enumerate(reply.candidates, start=1):
        ref = cand.reference
        inliers, cover, agree = (str(cand.inliers), f"{cand.inlier_coverage:.2f}", f"{cand.agreement:.2f}") \
            if cand.inliers >= 0 else ("-", "-", "-")
        lines.append(f"  {rank:>4}  {cand.score:6.3f}  {inliers:>7}  {cover:>5}  {agree:>5}  {ref.id:>6}  "
                     f"{ref.collection[:12]:<12} {ref.external_id[:28]:<28} {ref.source_uri}")
    lines.append("  " + format_verdict(reply.inpainting))
    return "\n".join(lines)


def format_verdict(v) -> str:
    """One line on the inpainting verdict; the mask's extent only when the query is called inpainted."""
    if not v.available:
        return "inpainting: not checked (no inpainting models loaded)"
    head = (f"inpainting: {'INPAINTED' if v.inpainted else 'not inpainted'} "
            f"(p={v.probability:.3f}, threshold {v.decision_threshold:.3f})")
    if not v.inpainted:
        return head
    if not v.localized:
        return head + "; not localized"
    box = v.mask_bbox
    where = f", box x={box.x} y={box.y} w={box.width} h={box.height}" if v.HasField("mask_bbox") else ""
    return head + f"; mask covers {100 * v.mask_area_fraction:.1f}% of the image{where}"


def format_reference(ref) -> str:
    """A ``Reference`` as ``key: value`` lines."""
    rows = [("id", ref.id), ("collection", ref.collection), ("external_id", ref.external_id),
            ("source_uri", ref.source_uri), ("size", f"{ref.width} x {ref.height}"), ("sha256", ref.sha256),
            ("created", ref.created_at.ToJsonString()), ("model_version", ref.model_version or "-")]
    rows += [(f"label.{k}", v) for k, v in sorted(ref.labels.items())]
    return "\n".join(f"{key:<14} {value}" for key, value in rows)


def format_reference_rows(refs) -> list[str]:
    """``Reference`` rows of a listing (no header)."""
    return [f"{ref.id:>8}  {ref.collection[:16]:<16} {ref.external_id[:32]:<32} {ref.width:>5}x{ref.height:<5} "
            f"{ref.source_uri}" for ref in refs]


REFERENCE_HEADER = f"{'id':>8}  {'collection':<16} {'external_id':<32} {'size':<11} source"


def format_stats(stats) -> str:
    """A ``GetIndexStatsResponse`` as a short report and a table of collections."""
    lines = [f"references       {stats.references:,}",
             f"indexed vectors  {stats.indexed_vectors:,} ({stats.index_type})",
             f"index recall@1   {stats.index_recall_at_1:.3f} (of exact search, near-duplicate queries)",
             f"model            {stats.model_version} on {stats.device}",
             f"match threshold  {stats.match_threshold:.3f}",
             f"inpainting       {'on' if stats.detectors_loaded else 'off'}",
             "", f"{'collection':<32} {'references':>12}"]
    lines += [f"{c.name[:32]:<32} {c.references:>12,}" for c in stats.collections]
    return "\n".join(lines)
