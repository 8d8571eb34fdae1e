"""The shipped blocklist: words and phrases a chat-driven prompt may never contain, by category.

Why these: Twitch bans real or fictional nudity and sexual content in any medium, synthetic
non-consensual imagery of real people, extreme gore, content that promotes self-harm, and hateful
slurs and symbols (Community Guidelines). The category name is what a rejected chatter is told;
the matched term itself is only written to the audit log, never echoed into chat.

Syntax of an entry (the streamer's `moderation.blocklist_extra` uses the same):
- `word` or `two words`: matches whole words (a trailing "s"/"es" plural included); the words of
  a phrase may be written together, apart or hyphenated ("self harm", "selfharm", "self-harm").
- `*stem`: also matches inside longer words ("*porn" catches "pornographic", "xxpornxx"); only for
  stems that no ordinary English word contains.
Matching is done on a normalised form (see moderation.py: NFKC, casefold, homoglyphs, leetspeak,
repeated letters, spacing tricks), so list each term once, in plain lowercase.
The streamer removes a shipped entry with `moderation.blocklist_allow` (spelled exactly as here).
"""

from __future__ import annotations

BLOCKLIST: dict[str, tuple[str, ...]] = {
    "sexual content": (
        "sex", "sexy", "sexual", "sexually", "sexualized", "nsfw", "nude", "nudity", "nudist", "naked",
        "*porn", "*hentai", "xxx", "erotic", "erotica", "*fetish", "bdsm", "bondage", "orgasm", "orgy",
        "cum", "cumshot", "*blowjob", "handjob", "*dildo", "*masturbat", "*penis", "*vagina", "vulva",
        "clitoris", "genital", "genitals", "genitalia", "*nipple", "boob", "boobies", "tits", "titties",
        "bare breasts", "topless", "bottomless", "lingerie", "underwear", "bikini", "thong", "panties",
        "stripper", "striptease", "strip tease", "stripping", "*onlyfans", "horny", "seductive", "lewd",
        "*ahegao", "milf", "camgirl", "hooker", "prostitute", "rule34", "rule 34", "r34", "ecchi",
        "oppai", "see through clothes", "see through clothing", "transparent clothes", "wet t shirt",
        "cleavage", "no clothes", "no clothing", "without clothes", "without clothing", "unclothed",
        "*undress", "take off clothes", "taking off clothes", "remove clothes", "removing clothes",
        "nudify", "butt naked", "sensual", "explicit", "playboy", "*pussy", "cock", "dick",
        "*jizz", "semen", "threesome", "kinky",
    ),
    "minors in sexual content": (
        "loli", "lolicon", "shota", "shotacon", "jailbait", "underage", "preteen",
    ),
    "non-consensual or deepfake imagery": (
        "deepfake", "deep fake", "faceswap", "face swap", "upskirt", "downblouse", "hidden cam",
        "hidden camera", "spycam", "spy cam", "creepshot", "voyeur", "nonconsensual",
        "non consensual", "rape", "raped", "raping", "molest", "molested",
    ),
    "gore": (
        "gore", "gory", "*decapitat", "behead", "beheaded", "beheading", "*dismember", "*disembowel",
        "*mutilat", "entrails", "bloodbath", "blood bath", "severed head", "severed limb", "torture",
        "tortured", "impaled", "flayed", "massacre", "school shooting", "snuff", "guts spilling",
        "eviscerated", "corpses", "dead body", "dead bodies",
    ),
    "self-harm": (
        "self harm", "suicide", "suicidal", "kill myself", "kill yourself", "kms", "kys",
        "slit wrist", "slit wrists", "slitting wrists", "cut myself", "cutting myself", "hang myself",
        "hanging myself", "pro ana", "thinspo", "overdose",
    ),
    "hate": (
        "*nigger", "nigga", "chink", "gook", "spic", "kike", "wetback", "raghead", "towelhead",
        "beaner", "coon", "paki", "*faggot", "fag", "dyke", "tranny", "shemale", "retard", "retarded",
        "spaz", "jigaboo", "porch monkey", "swastika", "nazi", "kkk", "heil hitler", "sieg heil",
        "white power", "1488",
    ),
}
