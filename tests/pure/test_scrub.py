"""Command-line scrubbing (agent/enrich/scrub.py): each form of secret, byte for byte."""

import pytest

from agent.enrich.scrub import MASK, Scrubber

CASES = [
    # (argv, scrubbed argv)
    (["app", "--password=hunter2", "-v"], ["app", f"--password={MASK}", "-v"]),
    (["app", "--password", "hunter2", "run"], ["app", "--password", MASK, "run"]),
    (["java", "-apiKey", "abc123", "-jar", "x.jar"], ["java", "-apiKey", MASK, "-jar", "x.jar"]),
    (["env", "DB_PASSWORD=hunter2", "AWS_ACCESS_KEY_ID=AKIA", "make"],
     ["env", f"DB_PASSWORD={MASK}", f"AWS_ACCESS_KEY_ID={MASK}", "make"]),
    (["app", "--token", "t0k", "--db-secret=s"], ["app", "--token", MASK, f"--db-secret={MASK}"]),
    (["/usr/bin/mysql", "-uroot", "-pSECRET", "db"], ["/usr/bin/mysql", "-uroot", f"-p{MASK}", "db"]),
    (["mysql", "-p", "db"], ["mysql", "-p", "db"]),  # a bare -p prompts: db is no secret
    (["redis-cli", "-h", "h", "-a", "SECRET", "ping"], ["redis-cli", "-h", "h", "-a", MASK, "ping"]),
    (["curl", "-u", "user:pass", "http://x/"], ["curl", "-u", f"user:{MASK}", "http://x/"]),
    (["curl", "-uuser:pass", "http://x/"], ["curl", f"-uuser:{MASK}", "http://x/"]),
    (["curl", "--user", "bob:pw", "http://x/"], ["curl", "--user", f"bob:{MASK}", "http://x/"]),
    (["curl", "-H", "Authorization: Bearer abc.def", "https://x/"],
     ["curl", "-H", f"Authorization: {MASK}", "https://x/"]),
    (["curl", "-H", "Accept: text/plain", "https://x/"], ["curl", "-H", "Accept: text/plain", "https://x/"]),
    (["psql", "postgresql://admin:s3cr3t@db.internal/prod"], ["psql", f"postgresql://admin:{MASK}@db.internal/prod"]),
    (["app", "--dsn=redis://:pw@cache:6379/0"], ["app", f"--dsn=redis://:{MASK}@cache:6379/0"]),
    (["python3", "-c", "print(1)", "--verbose"], ["python3", "-c", "print(1)", "--verbose"]),
    (["/usr/lib/keyring-daemon", "--start"], ["/usr/lib/keyring-daemon", "--start"]),
    (["app", "--password"], ["app", "--password"]),  # nothing after it
]


@pytest.mark.parametrize("argv,want", CASES, ids=[" ".join(a)[:40] for a, _ in CASES])
def test_each_form_is_scrubbed(argv, want):
    assert Scrubber().scrub(argv) == want


def test_configured_words_are_added_to_the_defaults():
    s = Scrubber(["Session"])
    assert s.scrub(["app", "--session-id", "abc", "--password=x"]) == ["app", "--session-id", MASK, f"--password={MASK}"]
    assert Scrubber().scrub(["app", "--session-id", "abc"]) == ["app", "--session-id", "abc"]
