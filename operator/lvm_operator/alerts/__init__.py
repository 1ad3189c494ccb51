"""Alert rules for LVM serving, rendered from the metric contract (see :mod:`.rules`)."""

from .rules import (
    RULES_FILE,
    AlertThresholds,
    alert_rules,
    render_rules_yaml,
    write_rules_file,
)

__all__ = ["RULES_FILE", "AlertThresholds", "alert_rules", "render_rules_yaml", "write_rules_file"]
