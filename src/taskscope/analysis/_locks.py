"""Findings about synchronisation primitives and resources (DESIGN.md's stable kinds).

``lock-held-too-long``, ``lock-never-released`` and ``deadlock`` from the ``locks``
section; ``resource-unclosed`` from the ``resources`` section.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .._core._records import Finding

if TYPE_CHECKING:
    from ..monitors._locks import LocksSnapshot, PrimitiveInfo
    from ..monitors._resources import ResourcesSnapshot


def _where(location: Any) -> dict[str, Any] | None:
    return dataclasses.asdict(location) if location is not None else None


def _held_too_long(primitive: PrimitiveInfo, threshold: float) -> Finding | None:
    current = [h for h in primitive.holders if h.held_for >= threshold and not h.task_ended]
    longest = primitive.longest_hold
    if primitive.held_too_long == 0 and not current:
        return None
    if current and (longest is None or current[0].held_for > longest):
        task, location, duration, still = (
            current[0].task,
            current[0].acquired_at,
            current[0].held_for,
            True,
        )
    else:
        task, location = primitive.longest_hold_task, primitive.longest_hold_at
        duration, still = longest or 0.0, False
    state = "is still held" if still else "was held"
    return Finding(
        kind="lock-held-too-long",
        severity="warning",
        message=(
            f"{primitive.name} {state} for {duration:.3f} s (threshold {threshold:g} s); "
            f"{primitive.held_too_long} release(s) over the threshold"
        ),
        location=location,
        task=task,
        details={
            "primitive": primitive.id,
            "name": primitive.name,
            "kind": primitive.kind,
            "held_for": duration,
            "threshold": threshold,
            "count": primitive.held_too_long,
            "still_held": still,
        },
    )


def lock_findings(snapshot: LocksSnapshot) -> list[Finding]:
    """Return the findings of a ``locks`` section."""
    findings: list[Finding] = []
    for primitive in snapshot.primitives:
        finding = _held_too_long(primitive, snapshot.held_too_long_threshold)
        if finding is not None:
            findings.append(finding)
        for holder in primitive.holders:
            if not (holder.task_ended or snapshot.program_ended):
                continue
            reason = "holder-ended" if holder.task_ended else "held-at-exit"
            owner = f"task {holder.task.name!r}" if holder.task is not None else "a non-task"
            why = "finished without releasing it" if holder.task_ended else "still held it at exit"
            findings.append(
                Finding(
                    kind="lock-never-released",
                    severity="error",
                    message=f"{primitive.name} was never released: {owner} {why}",
                    location=holder.acquired_at,
                    task=holder.task,
                    details={
                        "primitive": primitive.id,
                        "name": primitive.name,
                        "kind": primitive.kind,
                        "reason": reason,
                        "held_for": holder.held_for,
                    },
                )
            )
    for deadlock in snapshot.deadlocks:
        first = deadlock.tasks[0] if deadlock.tasks else None
        names = " -> ".join(
            repr(member.task.name) if member.task is not None else "?" for member in deadlock.tasks
        )
        findings.append(
            Finding(
                kind="deadlock",
                severity="error",
                message=f"deadlock: {len(deadlock.tasks)} tasks wait for each other ({names})",
                location=first.waiting_at if first is not None else None,
                task=first.task if first is not None else None,
                details={
                    "detected": deadlock.detected,
                    "tasks": [
                        {
                            "task": dataclasses.asdict(m.task) if m.task is not None else None,
                            "waits_for": m.waits_for,
                            "waiting_at": _where(m.waiting_at),
                            "holds": [
                                {**h, "acquired_at": _where(h.get("acquired_at"))} for h in m.holds
                            ],
                        }
                        for m in deadlock.tasks
                    ],
                },
            )
        )
    return findings


def resource_findings(snapshot: ResourcesSnapshot) -> list[Finding]:
    """Return ``resource-unclosed`` for every resource not closed at exit or collected open."""
    findings: list[Finding] = []
    for resource in snapshot.resources:
        if resource.closed is not None:
            continue
        if not (resource.collected_open or snapshot.program_ended):
            continue
        why = (
            "was garbage-collected without being closed"
            if resource.collected_open
            else ("was still open when the program ended")
        )
        findings.append(
            Finding(
                kind="resource-unclosed",
                severity="warning",
                message=f"{resource.kind} {resource.name} {why}",
                location=resource.opened_at,
                task=resource.opened_by,
                details={
                    "resource": resource.id,
                    "kind": resource.kind,
                    "name": resource.name,
                    "open_for": resource.duration,
                    "reason": "collected-open" if resource.collected_open else "open-at-exit",
                },
            )
        )
    return findings
