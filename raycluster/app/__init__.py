"""Job bodies: what each `jobs/*.py` entry point runs. Library packages never import this one."""
