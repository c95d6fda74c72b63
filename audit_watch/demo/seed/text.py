"""Short, realistic prompts, responses and thread names for each kind of agent.

Pools are expanded once (``pools(rng)``); rows then pick by index.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# texts key -> (thread names, prompts, responses); "{n}" is a number.
CORPUS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "support": (
        ("Login loop on mobile app", "Invoice shows wrong VAT", "Password reset not arriving",
         "Order #{n} delayed", "Cannot add team member", "Export to CSV fails",
         "Billing question from Acme Corp", "Refund status for #{n}"),
        ("Customer says the reset email never arrives, what should I check?",
         "Summarise ticket #{n} and suggest a reply.",
         "Is the export bug from last week fixed?",
         "Draft a polite answer about the delayed order #{n}.",
         "Which plan includes SSO?",
         "Customer cannot add a seat, error says limit reached."),
        ("Check the spam folder and the domain allow-list; resend from the admin page.",
         "Ticket #{n}: customer charged twice in October. Suggested reply attached.",
         "Yes, fixed in 4.12. Ask the customer to update the app.",
         "Here is a draft apologising for the delay and giving the new ETA.",
         "SSO is part of the Business plan and above.",
         "The workspace is at its seat limit; an owner can raise it under Billing."),
    ),
    "intake": (
        ("Zendesk ticket #{n}", "Intercom conversation {n}", "Form submission #{n}",
         "Status page webhook {n}"),
        ("New ticket #{n}: app crashes when uploading a PDF.",
         "New ticket #{n}: customer asks for an invoice copy.",
         "New ticket #{n}: cannot connect Slack integration.",
         "Incoming form: demo request from a 40-person company."),
        ("Classified as bug / priority P2, routed to Support Triage.",
         "Classified as billing / priority P3, routed to Refund Assistant.",
         "Classified as integrations / priority P2, tagged slack.",
         "Classified as sales lead, forwarded to Lead Router."),
    ),
    "refunds": (
        ("Refund request #{n}", "Duplicate charge #{n}", "Cancel annual plan",
         "Partial refund for outage"),
        ("Customer was charged twice for invoice #{n}, can we refund one?",
         "Is a pro-rata refund allowed for annual plans cancelled in month 3?",
         "Outage credit for the 2-hour incident: how much do we owe?"),
        ("Duplicate confirmed; refund of one charge issued to the original card.",
         "Annual plans refund pro-rata minus one month; draft reply attached.",
         "Credit of 5 % of the monthly fee applies per the SLA."),
    ),
    "sales": (
        ("Prep call with Northwind", "Pipeline review Q4", "Pricing for 250 seats",
         "Follow-up email to Contoso", "Deal #{n} next steps"),
        ("Prepare talking points for the Northwind call tomorrow.",
         "Which deals over 50k are stuck in negotiation?",
         "Draft a follow-up to Contoso after the demo.",
         "What discount did we give similar customers at 250 seats?"),
        ("Three talking points: SSO rollout, audit logs, token budgets.",
         "Four deals over 50k have had no activity for 14 days.",
         "Draft: thanks for your time today, next step is a security review.",
         "Median discount at that size was 12 %, maximum 18 %."),
    ),
    "leads": (
        ("Web form lead #{n}", "Trial signup #{n}", "Webinar registrant {n}"),
        ("New lead: 120 employees, logistics, asks about API access.",
         "Trial signup from a university, 15 seats.",
         "Webinar registrant from a 2,000-person bank."),
        ("Routed to the mid-market team, owner Ava Patel.",
         "Routed to self-serve nurture sequence.",
         "Routed to enterprise, flagged for a call within 24 hours."),
    ),
    "code": (
        ("Review PR #{n}", "Flaky test in billing", "Migration plan for jobs table",
         "Why is CI slow", "Refactor auth middleware"),
        ("Review PR #{n}: adds retry to the webhook client.",
         "Why does test_invoice_totals fail every few runs?",
         "Is it safe to add an index on jobs(created_at) online?",
         "Suggest a cleaner structure for the auth middleware."),
        ("Looks good; the retry should cap the backoff and respect Retry-After.",
         "It depends on dict ordering of line items; sort before comparing.",
         "Yes, use CREATE INDEX CONCURRENTLY; expect about 4 minutes.",
         "Split token parsing from permission checks; two small functions."),
    ),
    "incident": (
        ("INC-{n} timeline", "Postmortem draft INC-{n}", "Pager summary"),
        ("Write the timeline for INC-{n} from the channel history.",
         "Summarise what we know about the API latency spike.",
         "Draft the customer-facing status update."),
        ("Timeline drafted: detected 14:02, mitigated 14:31, resolved 15:10.",
         "Latency rose after the cache node restart; p95 back to normal now.",
         "Draft: some requests were slow between 14:02 and 14:31 UTC."),
    ),
    "kb": (
        ("", "", ""),
        ("Re-index handbook/engineering/*.md and refresh embeddings.",
         "Summarise changed pages in docs/api since the last sync.",
         "Rebuild the FAQ answers from the support macros."),
        ("Indexed 42 pages, 3 changed, embeddings refreshed.",
         "5 pages changed: auth, webhooks, rate limits, pagination, errors.",
         "FAQ rebuilt: 118 answers, 6 updated."),
    ),
    "report": (
        ("Nightly finance report", ),
        ("Compile yesterday's revenue, refunds and outstanding invoices.",
         "Post the nightly finance summary to #finance."),
        ("Revenue 48,210 EUR, refunds 1,150 EUR, 23 invoices outstanding.",
         "Posted the summary to #finance."),
    ),
    "invoice": (
        ("Invoice INV-{n}", "Supplier invoice from Globex", "PO mismatch #{n}"),
        ("Extract the totals from invoice INV-{n} and match the PO.",
         "Supplier invoice total differs from the purchase order, why?",
         "Which invoices are due this week?"),
        ("Total 3,480.00 EUR matches PO-{n}; ready for approval.",
         "The invoice includes shipping that the PO did not list.",
         "Seven invoices are due this week, 21,900 EUR in total."),
    ),
    "expense": (
        ("Expense report {n}", "Travel policy question", "Receipt missing"),
        ("Does a 120 EUR dinner fit the travel policy?",
         "Check expense report {n} for policy violations.",
         "Which reports are missing receipts?"),
        ("The limit is 80 EUR per person; needs manager approval.",
         "Report {n}: one hotel night above the city cap, otherwise fine.",
         "Four reports are missing receipts, reminders sent."),
    ),
    "marketing": (
        ("Blog post: audit logs", "Newsletter November", "Landing page copy",
         "Social posts for launch"),
        ("Draft a 600-word blog post about audit logs for admins.",
         "Write three subject lines for the November newsletter.",
         "Shorten the hero copy to under 12 words."),
        ("Draft ready: why audit logs matter, three tips, a call to action.",
         "1. What your agents did this month 2. Token budgets 3. New integrations",
         "See every job, thread and event in one place."),
    ),
    "hr": (
        ("Parental leave policy", "Payroll date question", "Onboarding checklist",
         "Holiday carry-over"),
        ("How many days of parental leave do we offer in Germany?",
         "When is payroll this month?",
         "What does a new hire need on day one?",
         "Can I carry over unused holiday into next year?"),
        ("The policy page lists the statutory leave plus 4 extra weeks at full pay.",
         "Payroll runs on the 27th; the 28th if it falls on a weekend.",
         "Laptop, accounts, buddy and the first-week plan; checklist attached.",
         "Up to 5 days can be carried over until the end of March."),
    ),
}

CRON_TEXT = {
    "standup": ("Collect yesterday's merged PRs and open reviews for the standup.",
                "Standup digest: 12 PRs merged, 5 reviews waiting, 1 failing build."),
    "pipeline": ("Summarise pipeline changes since yesterday for the sales team.",
                 "Pipeline: 3 deals advanced, 1 lost, 2 new opportunities over 20k."),
    "nightly": ("Compile yesterday's revenue, refunds and outstanding invoices.",
                "Revenue 48,210 EUR, refunds 1,150 EUR, 23 invoices outstanding."),
    "sweep": ("Check new expense reports for policy violations.",
              "Checked new expense reports: all within policy."),
    "backlog": ("Summarise the open ticket backlog by priority.",
                "Backlog: 4 P1, 19 P2, 57 P3; oldest P2 is 3 days old."),
    "weekly": ("Compile last week's campaign metrics.",
               "Weekly metrics: 12,400 visits, 310 signups, 4.1 % conversion."),
    "access": ("Review who has admin access.", "Access review complete."),
}


@dataclass(frozen=True)
class TextPool:
    names: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]     # (prompt, response)


def _fill(template: str, n: str) -> str:
    return template.replace("{n}", n)


def pools(rng: random.Random) -> dict[str, TextPool]:
    """Every agent's text, expanded once with numbers drawn from ``rng``."""
    result = {}
    for key, (names, prompts, responses) in CORPUS.items():
        pairs = []
        for prompt, response in zip(prompts, responses, strict=True):
            copies = 6 if "{n}" in prompt + response else 1
            for _ in range(copies):
                n = str(rng.randrange(1000, 99999))
                pairs.append((_fill(prompt, n), _fill(response, n)))
        filled = [_fill(name, str(rng.randrange(1000, 99999)))
                  for name in names if name for _ in range(40 if "{n}" in name else 1)]
        result[key] = TextPool(tuple(filled) or ("",), tuple(pairs))
    return result
