"""The attribute space of the synthetic product world and the marketplace words for it.

A synthetic class is one tuple (category, colour, pattern, material, brand). The space holds
20 x 16 x 12 x 8 x 40 = 1,228,800 tuples, enough for a million distinct classes. Each value has
several surface words (synonyms, Spanish and Chinese words) so that a title names an attribute
in many ways and words are shared between classes that share the attribute; that sharing is
what lets side information help the tail classes (paper section 3: noisy seller text).

No word here contains a digit other than the promo word "2024", and none contains the tag
separator '|'.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttributeValue:
    name: str                  # canonical name, used in classes.jsonl
    words: tuple[str, ...]     # surface forms a seller may write
    rgb: tuple[int, int, int] | None = None  # colours only


def _values(rows) -> tuple[AttributeValue, ...]:
    return tuple(AttributeValue(name, tuple(words)) for name, words in rows)


CATEGORIES = _values([
    ("mug", ["mug", "cup", "coffee mug", "taza", "马克杯"]),
    ("bottle", ["bottle", "water bottle", "flask", "botella", "水瓶"]),
    ("sneaker", ["sneaker", "shoe", "trainers", "zapatilla", "运动鞋"]),
    ("handbag", ["handbag", "bag", "purse", "bolso", "手提包"]),
    ("lamp", ["lamp", "desk lamp", "light", "lámpara", "台灯"]),
    ("phone case", ["phone case", "phone cover", "case", "funda", "手机壳"]),
    ("watch", ["watch", "wristwatch", "timepiece", "reloj", "手表"]),
    ("hat", ["hat", "cap", "bucket hat", "sombrero", "帽子"]),
    ("t-shirt", ["t-shirt", "tee", "shirt", "camiseta", "T恤"]),
    ("chair", ["chair", "seat", "stool", "silla", "椅子"]),
    ("backpack", ["backpack", "rucksack", "school bag", "mochila", "背包"]),
    ("umbrella", ["umbrella", "parasol", "paraguas", "雨伞"]),
    ("vase", ["vase", "flower vase", "jarrón", "花瓶"]),
    ("teapot", ["teapot", "tea pot", "kettle", "tetera", "茶壶"]),
    ("headphones", ["headphones", "headset", "earphones", "auriculares", "耳机"]),
    ("sunglasses", ["sunglasses", "shades", "glasses", "gafas de sol", "太阳镜"]),
    ("laptop", ["laptop", "notebook computer", "portátil", "笔记本电脑"]),
    ("bowl", ["bowl", "salad bowl", "cuenco", "碗"]),
    ("notebook", ["notebook", "journal", "diary", "cuaderno", "笔记本"]),
    ("cushion", ["cushion", "pillow", "throw pillow", "cojín", "抱枕"]),
])

COLOURS = tuple(
    AttributeValue(name, tuple(words), rgb)
    for name, words, rgb in [
        ("red", ["red", "crimson", "rojo", "红色"], (200, 30, 35)),
        ("blue", ["blue", "royal blue", "azul", "蓝色"], (40, 80, 200)),
        ("green", ["green", "emerald", "verde", "绿色"], (40, 150, 60)),
        ("yellow", ["yellow", "lemon", "amarillo", "黄色"], (235, 205, 40)),
        ("black", ["black", "jet black", "negro", "黑色"], (25, 25, 28)),
        ("white", ["white", "ivory", "blanco", "白色"], (238, 236, 230)),
        ("pink", ["pink", "rose", "rosa", "粉色"], (240, 130, 170)),
        ("purple", ["purple", "violet", "morado", "紫色"], (120, 50, 160)),
        ("orange", ["orange", "tangerine", "naranja", "橙色"], (240, 130, 30)),
        ("brown", ["brown", "chocolate", "marrón", "棕色"], (115, 70, 35)),
        ("grey", ["grey", "gray", "gris", "灰色"], (128, 128, 128)),
        ("navy", ["navy", "dark blue", "azul marino", "藏青"], (25, 35, 90)),
        ("teal", ["teal", "turquoise", "verde azulado", "青色"], (30, 140, 140)),
        ("beige", ["beige", "khaki", "crema", "米色"], (215, 195, 155)),
        ("gold", ["gold", "golden", "dorado", "金色"], (205, 165, 50)),
        ("silver", ["silver", "metallic grey", "plateado", "银色"], (185, 190, 195)),
    ]
)

PATTERNS = _values([
    ("plain", ["plain", "solid", "liso", "纯色"]),
    ("striped", ["striped", "stripes", "rayas", "条纹"]),
    ("polka dot", ["polka dot", "dotted", "lunares", "波点"]),
    ("checked", ["checked", "plaid", "tartan", "cuadros", "格子"]),
    ("gradient", ["gradient", "ombre", "degradado", "渐变"]),
    ("diagonal", ["diagonal stripe", "twill", "diagonal", "斜纹"]),
    ("zigzag", ["zigzag", "chevron", "zig zag", "锯齿纹"]),
    ("grid", ["grid", "lattice", "cuadrícula", "网格"]),
    ("wavy", ["wavy", "waves", "ondas", "波浪纹"]),
    ("camo", ["camo", "camouflage", "camuflaje", "迷彩"]),
    ("rings", ["ring print", "circles", "círculos", "圆环"]),
    ("speckled", ["speckled", "terrazzo", "moteado", "斑点"]),
])

MATERIALS = _values([
    ("matte", ["matte", "frosted", "mate", "哑光"]),
    ("glossy", ["glossy", "shiny", "brillante", "亮面"]),
    ("metal", ["metal", "steel", "aluminium", "metálico", "金属"]),
    ("wood", ["wood", "wooden", "bamboo", "madera", "木质"]),
    ("leather", ["leather", "pu leather", "cuero", "皮革"]),
    ("fabric", ["fabric", "canvas", "cotton", "tela", "布艺"]),
    ("ceramic", ["ceramic", "porcelain", "cerámica", "陶瓷"]),
    ("plastic", ["plastic", "acrylic", "plástico", "塑料"]),
])

_BRAND_NAMES = (
    "Aurora", "Zentek", "Kobalt", "Mirava", "Lunex", "Trivo", "Ostra", "Pexa", "Quorin", "Velta",
    "Norda", "Siko", "Umbra", "Yarrow", "Fennix", "Glint", "Harbo", "Ivara", "Jolto", "Kestrel",
    "Lumo", "Marlo", "Nexo", "Orbi", "Pinta", "Qiro", "Rusk", "Solvi", "Tavi", "Ulla",
    "Vexo", "Wren", "Xylo", "Yumi", "Zaro", "Brio", "Calla", "Dovo", "Elko", "Fjord",
)
_BRAND_CJK_FIRST = "星悦优极光云海山青金"
_BRAND_CJK_SECOND = "家品达美"

# Each brand: its name, the lower-case name and a Chinese shop name (two characters, unique).
BRANDS = tuple(
    AttributeValue(name, (name, name.lower(), _BRAND_CJK_FIRST[i % 10] + _BRAND_CJK_SECOND[i // 10]))
    for i, name in enumerate(_BRAND_NAMES)
)

# Order of the attributes in a class tuple; also the canonical word order of a clean title.
ATTRIBUTES = (
    ("brand", BRANDS),
    ("colour", COLOURS),
    ("material", MATERIALS),
    ("pattern", PATTERNS),
    ("category", CATEGORIES),
)
ATTRIBUTE_NAMES = tuple(name for name, _ in ATTRIBUTES)
ATTRIBUTE_SIZES = tuple(len(values) for _, values in ATTRIBUTES)

# Marketplace noise: promotion phrases and filler words that say nothing about the product.
PROMO_WORDS = (
    "hot sale", "free shipping", "2024 new", "new arrival", "best seller", "limited edition",
    "high quality", "wholesale", "official store", "original", "gift", "oferta", "envío gratis",
    "nuevo", "包邮", "新款", "热卖", "正品", "特价",
)
FILLER_WORDS = (
    "for", "women", "men", "kids", "home", "office", "travel", "fashion", "cute", "premium",
    "classic", "mini", "large", "portable", "set", "style", "mujer", "hombre", "时尚", "家用",
)


def attribute_space_size() -> int:
    size = 1
    for n in ATTRIBUTE_SIZES:
        size *= n
    return size
