"""Schedules and templates: the timer that fires schedules exactly once (`timer`), their use
cases (`service`), and templates with the launcher both use (`templates`)."""

from hodei.server.core.schedules.service import ScheduleRequest, Schedules, ScheduleView
from hodei.server.core.schedules.templates import Launched, Launcher, Templates
from hodei.server.core.schedules.timer import ScheduleTimer

__all__ = [
    "Launched",
    "Launcher",
    "ScheduleRequest",
    "ScheduleTimer",
    "ScheduleView",
    "Schedules",
    "Templates",
]
