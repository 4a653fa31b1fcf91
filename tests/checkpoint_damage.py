"""Damaging a checkpoint's array files as disks, copies and people do, for the recovery tests."""

import os

DAMAGES = ("garble", "delete", "truncate")


def array_files(step_directory):
    """The array data files of a step directory's train state (orbax's `d/` chunk files)."""
    state = os.path.join(step_directory, "state")
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(state)
        for name in names
        if os.path.basename(root) == "d"
    )


def damage_array_files(step_directory, damage):
    """Damages every array file of the state: 'delete' them, 'truncate' them to half (an interrupted
    copy), or 'garble' every seventh byte (overwritten in place). Every one, because a single file
    may hold only optimizer slots, which evaluation rightly never reads."""
    paths = array_files(step_directory)
    assert paths, f"no array files under {step_directory}"
    for path in paths:
        if damage == "delete":
            os.remove(path)
        elif damage == "truncate":
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        elif damage == "garble":
            with open(path, "r+b") as f:
                data = bytearray(f.read())
                data[::7] = bytes(b ^ 0xFF for b in data[::7])
                f.seek(0)
                f.write(data)
        else:
            raise ValueError(f"damage must be one of {DAMAGES}, got {damage!r}")
