"""A multilingual text generator built into the repo (no downloads): ten scripts/languages,
emoji and mixed-script lines, deterministic for a seed."""

from __future__ import annotations

import random

WORDS: dict[str, list[str]] = {
    "en": "river city music coffee garden winter ocean forest book train lamp cheese violin market bicycle museum".split(),
    "de": "Fluss Stadt Musik Kaffee Garten Winter Meer Wald Buch Zug Lampe Käse Geige Markt Fahrrad Museum".split(),
    "fr": "rivière ville musique café jardin hiver océan forêt livre train lampe fromage violon marché vélo musée".split(),
    "es": "río ciudad música café jardín invierno océano bosque libro tren lámpara queso violín mercado bicicleta museo".split(),
    "ru": "река город музыка кофе сад зима океан лес книга поезд лампа сыр скрипка рынок велосипед музей".split(),
    "ar": "نهر مدينة موسيقى قهوة حديقة شتاء محيط غابة كتاب قطار مصباح جبن كمان سوق دراجة متحف".split(),
    "ja": "川 都市 音楽 コーヒー 庭 冬 海 森 本 電車 ランプ チーズ バイオリン 市場 自転車 博物館".split(),
    "zh": "河流 城市 音乐 咖啡 花园 冬天 海洋 森林 书 火车 灯 奶酪 小提琴 市场 自行车 博物馆".split(),
    "ko": "강 도시 음악 커피 정원 겨울 바다 숲 책 기차 램프 치즈 바이올린 시장 자전거 박물관".split(),
    "hi": "नदी शहर संगीत कॉफ़ी बगीचा सर्दी सागर जंगल किताब ट्रेन दीपक पनीर वायलिन बाज़ार साइकिल संग्रहालय".split(),
}
EMOJI = "🙂 🚲 ☕ 🎻 🌲 📚 🚆 🧀 🌊 ❄️".split()
LANGS = sorted(WORDS)
_JOINER = {"ja": "", "zh": ""}


def sentence(rng: random.Random, lang: str | None = None, words: int | None = None) -> str:
    """One sentence in one language; sometimes with an emoji or a word of another script."""
    lang = lang or rng.choice(LANGS)
    n = words or rng.randint(4, 14)
    parts = [rng.choice(WORDS[lang]) for _ in range(n)]
    if rng.random() < 0.2:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(EMOJI))
    if rng.random() < 0.1:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(WORDS[rng.choice(LANGS)]))
    return _JOINER.get(lang, " ").join(parts)


def document(rng: random.Random, lang: str | None = None) -> str:
    return " ".join(sentence(rng, lang) for _ in range(rng.randint(1, 3)))


def query(rng: random.Random, lang: str | None = None) -> str:
    return sentence(rng, lang, words=rng.randint(3, 7))


def scripts_of(text: str) -> set[str]:
    """Rough script detection (for tests of the corpus itself)."""
    found = set()
    for ch in text:
        o = ord(ch)
        if 0x0400 <= o <= 0x04FF:
            found.add("cyrillic")
        elif 0x0600 <= o <= 0x06FF:
            found.add("arabic")
        elif 0x3040 <= o <= 0x30FF or 0x4E00 <= o <= 0x9FFF:
            found.add("cjk")
        elif 0xAC00 <= o <= 0xD7AF:
            found.add("hangul")
        elif 0x0900 <= o <= 0x097F:
            found.add("devanagari")
        elif o >= 0x1F300:
            found.add("emoji")
        elif ch.isalpha():
            found.add("latin")
    return found
