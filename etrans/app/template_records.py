"""Records of the template use cases (:mod:`etrans.app.templates`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime


@dataclass(frozen=True)
class Template:
    """A stored template as saved (its parts are sources, never rendered here)."""

    id: int
    user_id: int
    name: str
    subject: str
    html: str | None
    text: str | None
    created_at: datetime
    updated_at: datetime

    def parts(self) -> dict[str, str | None]:
        return {"subject": self.subject, "html": self.html, "text": self.text}


@dataclass(frozen=True)
class TemplateFields:
    name: str
    subject: str
    html: str | None
    text: str | None


@dataclass(frozen=True)
class TemplateChanges:
    """None = unchanged; ``""`` for html or text = removed."""

    name: str | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class TemplateView:
    """A template and the variables its parts use (sorted)."""

    template: Template
    variables: tuple[str, ...]


@dataclass(frozen=True)
class TemplatePage:
    rows: list[TemplateView]
    total: int
    page: int
    per_page: int
