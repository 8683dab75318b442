"""Runs one fuzz case in the child process (importable by name for 'spawn')."""


def run_case(name, args, kwargs):
    """Call convcore.<name>; report what happened, never raise."""
    import convcore
    try:
        out = getattr(convcore, name)(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the parent judges the exception type
        return type(e).__name__, str(e), None
    return "ok", "", out
