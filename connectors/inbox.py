"""Who processes which inbound event. Apps register their handlers at start-up (AppConfig.ready), so the
connectors never import the apps that use them."""

from collections.abc import Callable
from dataclasses import dataclass

from connectors.models import EventStatus, InboundEvent


@dataclass(frozen=True)
class Outcome:
    status: str = EventStatus.PROCESSED
    message: str = ""


Handler = Callable[[InboundEvent], Outcome]
_handlers: dict[tuple[str, str], Handler] = {}


def register(source: str, *event_types: str) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        for event_type in event_types:
            existing = _handlers.get((source, event_type))
            if existing is not None and existing is not handler:
                raise ValueError(f"{source} {event_type} already has a handler: {existing.__qualname__}")
            _handlers[(source, event_type)] = handler
        return handler

    return decorate


def handler_for(source: str, event_type: str) -> Handler | None:
    return _handlers.get((source, event_type))
