"""One small unit per rule kind; :data:`KINDS` maps a rule's ``kind`` to it."""

from audit_watch.rules.kinds.absence import Absence
from audit_watch.rules.kinds.any_row import AnyRow
from audit_watch.rules.kinds.base import EvalContext, Found, RuleKind
from audit_watch.rules.kinds.cron_missed import CronMissed
from audit_watch.rules.kinds.metric import Metric
from audit_watch.rules.kinds.new_value import NewValue
from audit_watch.rules.kinds.ratio import Ratio
from audit_watch.rules.kinds.spike import Spike
from audit_watch.rules.kinds.threshold import Threshold

KINDS: dict[str, RuleKind] = {
    kind.name: kind
    for kind in (Threshold(), Ratio(), Spike(), Metric(), Absence(), CronMissed(), NewValue(), AnyRow())
}

__all__ = ["KINDS", "EvalContext", "Found", "RuleKind"]
