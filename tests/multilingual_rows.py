"""Hand-written instruction rows in Chinese, Japanese, mixed Chinese-English and English, for the text-similarity
tests: each corpus has 20 distinct rows (several share an instruction, as templated data does, so a shingling that
looks only at the instruction would wrongly call them duplicates) and known near-duplicates made from them by small
edits (:func:`variants`)."""

from __future__ import annotations

Row = tuple[str, str, str]  # instruction, input, output (alpaca)

ZH: list[Row] = [
    ("总结下面这段话的主要内容。", "机器学习是人工智能的一个分支，它让计算机能够从数据中学习规律，而不需要明确的编程。", "机器学习让计算机从数据中自动学习规律。"),
    ("总结下面这段话的主要内容。", "长城是中国古代的军事防御工程，东西绵延上万里，是世界上最著名的建筑之一。", "长城是中国古代著名的防御工程。"),
    ("判断下面评论的情感是正面还是负面。", "这家餐厅的菜很好吃，服务也很周到，下次还会再来。", "正面"),
    ("判断下面评论的情感是正面还是负面。", "快递太慢了，包装也破了，客服一直不回复消息。", "负面"),
    ("判断下面评论的情感是正面还是负面。", "手机的屏幕很清晰，电池也很耐用，价格还算合理。", "正面"),
    ("把下面的句子改写得更正式一些。", "老板说明天的会不开了，大家在家休息吧。", "经理通知，明日会议取消，请各位在家休息。"),
    ("回答下面的问题。", "中国的首都是哪个城市？", "中国的首都是北京。"),
    ("回答下面的问题。", "一年有多少个月？", "一年有十二个月。"),
    ("给下面的文章起一个标题。", "随着电动汽车的普及，越来越多的城市开始建设充电桩，以满足日益增长的充电需求。", "城市加快建设充电桩"),
    ("解释下面这个成语的意思。", "画蛇添足", "比喻做了多余的事，反而把事情弄糟了。"),
    ("解释下面这个成语的意思。", "守株待兔", "比喻死守狭隘的经验，不知变通，或者妄想不劳而获。"),
    ("写一句关于春天的诗句。", "", "春风又绿江南岸，明月何时照我还。"),
    ("列出三种常见的水果。", "", "苹果、香蕉和橙子。"),
    ("列出三种常见的蔬菜。", "", "白菜、萝卜和西红柿。"),
    ("计算下面的数学题。", "一个班有四十五名学生，其中女生有二十名，男生有多少名？", "男生有二十五名。"),
    ("用一句话介绍下面的城市。", "杭州", "杭州是浙江省的省会，以西湖美景闻名。"),
    # hard negatives: a shared template with a short, different content
    ("判断下面评论的情感是正面还是负面。", "味道一般，价格偏贵。", "负面"),
    ("判断下面评论的情感是正面还是负面。", "物流很快，非常满意。", "正面"),
    ("回答下面的问题。", "日本的首都是哪个城市？", "日本的首都是东京。"),
    ("列出三种常见的花。", "", "玫瑰、百合和菊花。"),
]

JA: list[Row] = [
    ("次の文章を要約してください。", "機械学習は人工知能の一分野であり、コンピュータがデータから規則を学ぶことを可能にします。", "機械学習はデータから規則を学ぶ技術です。"),
    ("次の文章を要約してください。", "富士山は日本で最も高い山で、多くの登山者や観光客が毎年訪れます。", "富士山は日本一高い人気の山です。"),
    ("次のレビューが肯定的か否定的か判定してください。", "料理がとてもおいしくて、店員さんも親切でした。また来たいです。", "肯定的"),
    ("次のレビューが肯定的か否定的か判定してください。", "配達が遅く、箱もつぶれていました。二度と注文しません。", "否定的"),
    ("次の質問に答えてください。", "日本の首都はどこですか。", "日本の首都は東京です。"),
    ("次の質問に答えてください。", "一週間は何日ですか。", "一週間は七日です。"),
    ("次の文をもっと丁寧な言い方に書き換えてください。", "明日の会議は中止になったから、みんな家で休んでね。", "明日の会議は中止となりましたので、皆様ご自宅でお休みください。"),
    ("次のことわざの意味を説明してください。", "猿も木から落ちる", "その道の名人でも失敗することがあるという意味です。"),
    ("次のことわざの意味を説明してください。", "急がば回れ", "急ぐときほど安全で確実な方法をとるほうがよいという意味です。"),
    ("春についての短い俳句を作ってください。", "", "桜咲く　川のほとりに　風やさし"),
    ("よく食べられている果物を三つ挙げてください。", "", "りんご、バナナ、みかんです。"),
    ("次の計算問題を解いてください。", "クラスに四十人の生徒がいて、そのうち十八人が女子です。男子は何人ですか。", "男子は二十二人です。"),
    ("次の記事にタイトルを付けてください。", "電気自動車の普及に伴い、多くの都市で充電スタンドの設置が進んでいます。", "都市で進む充電スタンドの整備"),
    ("次の都市を一文で紹介してください。", "京都", "京都は多くの寺や神社がある歴史の古い都市です。"),
    ("カタカナ語を日本語に言い換えてください。", "ミーティングのスケジュールをリマインドします。", "会議の予定をお知らせします。"),
    ("次のメールの返信を書いてください。", "来週の打ち合わせの日程を教えていただけますか。", "来週の水曜日の午後二時はいかがでしょうか。"),
    ("次のレビューが肯定的か否定的か判定してください。", "値段が高いわりに味は普通でした。", "否定的"),
    ("次のレビューが肯定的か否定的か判定してください。", "届くのが早くて大満足です。", "肯定的"),
    ("次の質問に答えてください。", "中国の首都はどこですか。", "中国の首都は北京です。"),
    ("よく食べられている野菜を三つ挙げてください。", "", "にんじん、たまねぎ、じゃがいもです。"),
]

MIXED: list[Row] = [
    ("用Python写一个函数，计算列表中所有数字的平均值。", "", "def mean(xs): return sum(xs) / len(xs)"),
    ("解释一下什么是REST API。", "", "REST API是一种基于HTTP协议的接口设计风格，用URL表示资源，用GET、POST等方法操作资源。"),
    ("把下面的句子翻译成英文。", "今天的天气非常好，我们一起去公园散步吧。", "The weather is lovely today, let's take a walk in the park together."),
    ("把下面的句子翻译成英文。", "我昨天在图书馆借了三本关于历史的书。", "Yesterday I borrowed three books about history from the library."),
    ("把下面的句子翻译成中文。", "Machine learning lets computers learn patterns from data.", "机器学习让计算机从数据中学习规律。"),
    ("把下面的句子翻译成中文。", "Please send me the report before Friday.", "请在周五之前把报告发给我。"),
    ("Git中merge和rebase有什么区别？", "", "merge会保留分支的历史并生成一个合并提交，rebase会把提交移到目标分支的最新提交之后，让历史变成一条直线。"),
    ("如何在Linux中查看磁盘使用情况？", "", "可以使用df -h命令查看每个分区的使用情况，用du -sh查看某个目录的大小。"),
    ("推荐一本适合初学者的深度学习教材。", "", "可以读Ian Goodfellow等人写的《Deep Learning》，也可以从《动手学深度学习》开始。"),
    ("下面这段SQL有什么问题？", "SELECT name FROM users WHERE age > 18 GROUP BY city", "name不在GROUP BY中，也没有使用聚合函数，大多数数据库会报错。"),
    ("解释transformer中的attention机制。", "", "attention根据query和key的相似度给每个value分配权重，再加权求和，让模型关注输入中最相关的部分。"),
    ("把下面的JSON转换成YAML。", '{"name": "Alice", "age": 30}', "name: Alice\nage: 30"),
    ("iPhone和Android手机各有什么优点？", "", "iPhone系统流畅、隐私保护好；Android机型多、价格选择广、可定制性强。"),
    ("用一句话介绍OpenAI。", "", "OpenAI是一家研究和部署人工智能的公司，开发了GPT系列模型和ChatGPT。"),
    ("Docker容器和虚拟机有什么区别？", "", "容器共享宿主机的内核，启动快、占用资源少；虚拟机运行完整的操作系统，隔离更彻底。"),
    ("给这个变量起一个更好的名字。", "int x = getUserCount();", "int userCount = getUserCount();"),
    ("把下面的句子翻译成中文。", "Please call me before Friday.", "请在周五之前给我打电话。"),
    ("用Python写一个函数，计算列表中所有数字的最大值。", "", "def largest(xs): return max(xs)"),
    ("用一句话介绍Google。", "", "Google是一家以搜索引擎闻名的科技公司，开发了Android和Chrome。"),
    ("Docker镜像和容器有什么区别？", "", "镜像是只读的模板，容器是镜像运行起来的实例，可以启动、停止和删除。"),
]

EN: list[Row] = [
    ("Summarise the main point of the following paragraph.", "Machine learning is a branch of artificial intelligence that lets computers learn patterns from data without being explicitly programmed.", "Machine learning lets computers learn patterns from data."),
    ("Summarise the main point of the following paragraph.", "The Great Wall is an ancient Chinese defensive structure that stretches for thousands of kilometres across northern China.", "The Great Wall is a famous ancient Chinese fortification."),
    ("Is the sentiment of this review positive or negative?", "The food was delicious and the staff were very friendly, we will definitely come back.", "positive"),
    ("Is the sentiment of this review positive or negative?", "Delivery took two weeks, the box was crushed and nobody answered my emails.", "negative"),
    ("Is the sentiment of this review positive or negative?", "The screen is sharp, the battery lasts all day and the price is fair.", "positive"),
    ("Rewrite the sentence in a more formal tone.", "The boss says tomorrow's meeting is off, so everyone can stay home.", "The manager has announced that tomorrow's meeting is cancelled; everyone may remain at home."),
    ("Answer the question.", "What is the capital of China?", "The capital of China is Beijing."),
    ("Answer the question.", "How many months are there in a year?", "There are twelve months in a year."),
    ("Write a headline for the following article.", "As electric cars become more common, more and more cities are building charging stations to meet the growing demand.", "Cities race to build charging stations"),
    ("Explain the meaning of this idiom.", "To add legs to a snake", "It means to ruin something by adding what is unnecessary."),
    ("Explain the meaning of this idiom.", "To wait by a tree stump for a rabbit", "It means to rely on luck instead of effort, or to cling to a narrow past experience."),
    ("Write one line of poetry about spring.", "", "The spring wind greens the southern shore once more."),
    ("List three common fruits.", "", "Apples, bananas and oranges."),
    ("List three common vegetables.", "", "Cabbage, carrots and tomatoes."),
    ("Solve the following maths problem.", "A class has forty-five students and twenty of them are girls. How many boys are there?", "There are twenty-five boys."),
    ("Describe the following city in one sentence.", "Hangzhou", "Hangzhou is the capital of Zhejiang province, famous for the West Lake."),
    ("Is the sentiment of this review positive or negative?", "Tasty but far too expensive.", "negative"),
    ("Is the sentiment of this review positive or negative?", "Fast delivery, very happy.", "positive"),
    ("Answer the question.", "What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("List three common flowers.", "", "Roses, lilies and daisies."),
]

CORPORA: dict[str, list[Row]] = {"zh": ZH, "ja": JA, "mixed": MIXED, "en": EN}
SPACED = {"en"}  # corpora written with spaces between words: edits work on words, not characters


def _to_full_width(text: str) -> str:
    """ASCII letters, digits, punctuation and spaces as their full-width forms (an IME in full-width mode)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else ("\u3000" if c == " " else c) for c in text)


def _to_half_width(text: str) -> str:
    """Full-width ASCII forms and the CJK punctuation a Chinese IME writes in full-width mode, as ASCII."""
    table = {"，": ",", "。": ".", "？": "?", "！": "!", "：": ":", "；": ";", "（": "(", "）": ")", "、": ",", "\u3000": " "}
    return "".join(table.get(c, chr(ord(c) - 0xFEE0) if "！" <= c <= "～" else c) for c in text)


def _middle(n: int) -> int:
    return max(1, n // 2)


def _edit(row: Row, kind: str, spaced: bool) -> Row:
    """``row`` changed in one small way, as near-duplicates in real data are."""
    instruction, inp, out = row
    field = out if len(out) >= len(inp) else inp

    def put(new: str) -> Row:
        return (instruction, new, out) if field is inp else (instruction, inp, new)

    if kind == "suffix":  # the case: a counter appended to the input
        return (instruction, inp + ("（2）" if not spaced else " (2)"), out)
    if kind == "width":  # the same text typed in the other width mode
        flip = _to_full_width if spaced or all(ord(c) < 128 for c in field) else _to_half_width
        return put(flip(field))
    if spaced:
        words = field.split()
        i = _middle(len(words))
        if kind == "substitute":
            words[i] = "something" if words[i] != "something" else "anything"
        else:  # insert
            words.insert(i, "really")
        return put(" ".join(words))
    i = _middle(len(field))
    if kind == "substitute":
        return put(field[:i] + ("某" if field[i] != "某" else "其") + field[i + 1 :])
    return put(field[:i] + "确实" + field[i:])  # insert


KINDS = ("substitute", "suffix", "width", "insert")


def variants(name: str) -> list[tuple[int, Row]]:
    """Every base row of corpus ``name`` (group = its index) followed later by two near-duplicates of it (edit kinds
    rotating), as ``(group, row)`` in file order: bases first, then all variants."""
    rows = CORPORA[name]
    spaced = name in SPACED
    out = [(g, row) for g, row in enumerate(rows)]
    for g, row in enumerate(rows):
        for k in (g % 4, (g + 1) % 4):
            out.append((g, _edit(row, KINDS[k], spaced)))
    return out


def alpaca(row: Row) -> dict[str, str]:
    return {"instruction": row[0], "input": row[1], "output": row[2]}


def suffix_rows(rows: list[Row], spaced: bool, copies: int = 7) -> list[Row]:
    """The issue's case: each row, then ``copies`` copies with only a counter suffix added to the input."""
    out = []
    for row in rows:
        out.append(row)
        for i in range(1, copies + 1):
            out.append((row[0], row[1] + (f" ({i})" if spaced else f"（{i}）"), row[2]))
    return out


def sample(name: str) -> list[Row]:
    """The 6 rows of corpus ``name`` that have an input (for the 48-row suffix case)."""
    return [r for r in CORPORA[name] if r[1]][:6]

