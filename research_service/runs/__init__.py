"""Run lifecycle: the manager, the event-log interface and its backends."""
