"""The console's words in English and Chinese, chosen by the browser's Accept-Language."""

from __future__ import annotations

LANGUAGES = ("en", "zh")

_WORDS: dict[str, tuple[str, str]] = {  # key: (English, 中文)
    "title": ("sopkit console", "sopkit 控制台"),
    "overview": ("Overview", "概览"),
    "customers": ("Customers", "客户"),
    "campaigns": ("Campaigns", "群发"),
    "handover": ("Hand-over", "离职继承"),
    "playbook": ("Playbook", "剧本"),
    "simulations": ("Simulations", "模拟"),
    "sign_in": ("Sign in", "登录"),
    "sign_out": ("Sign out", "退出"),
    "api_key": ("API key", "API 密钥"),
    "sign_in_help": ("Sign in with an API key of scope read or admin (SOPKIT_API_KEYS).",
                     "用 read 或 admin 权限的 API 密钥登录（SOPKIT_API_KEYS）。"),
    "wrong_key": ("This key is not known, or its scope cannot read.",
                  "密钥无效，或其权限不能读取。"),
    "too_many": ("Too many wrong keys from this address: wait a minute.",
                 "此地址输错密钥次数过多：请一分钟后再试。"),
    "scopes": ("scopes", "权限"),
    "events_in": ("Events in", "已接收事件"),
    "quarantined": ("Quarantined", "已隔离"),
    "inbox_depth": ("Waiting in the inbox", "收件箱待处理"),
    "outbox_depth": ("Outbox depth", "发件箱待发送"),
    "loop_lag": ("Loop lag", "循环延迟"),
    "loop": ("Live loop", "实时循环"),
    "running": ("running", "运行中"),
    "stopped": ("stopped", "已停止"),
    "position": ("applied up to inbox row", "已应用至收件箱行"),
    "seconds": ("s", "秒"),
    "actions_by": ("Actions by status and channel", "按状态和渠道统计的动作"),
    "status": ("status", "状态"),
    "channel": ("channel", "渠道"),
    "total": ("total", "合计"),
    "none": ("none", "无"),
    "task_list": ("(task list)", "（任务清单）"),
    "by_day": ("Actions by day due, last 30 days", "近 30 天每日到期的动作"),
    "by_day_help": ("Outbox rows counted on the playbook day they are due (a retried row: the "
                    "day of its retry), {first} to {last}; a day starts at {start} ({tz}). "
                    "Colours: each row's status now. One chart a channel, all on one scale.",
                    "发件箱行按到期的剧本日统计（重试过的行按重试那天），{first} 至 {last}；"
                    "每天从 {start}（{tz}）开始。颜色：各行当前的状态。每个渠道一张图，刻度相同。"),
    "by_day_chart": ("{channel}: rows due per day, {first} to {last}, {n} in all",
                     "{channel}：每日到期的行，{first} 至 {last}，共 {n} 行"),
    "by_day_table": ("The numbers, day by day", "每日数字"),
    "day": ("day", "日期"),
    "no_days": ("No actions due in the last 30 days.", "近 30 天没有到期的动作。"),
    "days_left_out": ("Days without actions are left out.", "没有动作的日子不列出。"),
    "dead_letters": ("Dead letters", "死信"),
    "no_dead": ("No dead letters.", "没有死信。"),
    "retry": ("Retry", "重试"),
    "retry_all": ("Retry every dead letter", "重试全部死信"),
    "retried": ("Requeued {n} dead letters: pending, due {due}.",
                "已重新排队 {n} 条死信：待发送，到期 {due}。"),
    "nothing_retried": ("No dead letters to retry.", "没有可重试的死信。"),
    "admin_only": ("Needs an admin key.", "需要 admin 权限的密钥。"),
    "id": ("id", "编号"),
    "due": ("due", "到期"),
    "customer": ("customer", "客户"),
    "rule": ("rule", "规则"),
    "action": ("action", "动作"),
    "tries": ("tries", "次数"),
    "note": ("note", "说明"),
    "last_quarantined": ("Last quarantined records", "最近隔离的记录"),
    "reason": ("reason", "原因"),
    "search_customer": ("Customer id", "客户编号"),
    "find": ("Find", "查找"),
    "not_found": ("The store holds no customer with this id.", "存储中没有此编号的客户。"),
    "owner": ("owner", "负责人"),
    "stage": ("stage", "阶段"),
    "tags": ("tags", "标签"),
    "facts": ("facts", "指标"),
    "scores": ("scores", "评分"),
    "profile": ("profile", "资料"),
    "as_of": ("as of", "截至"),
    "pending_actions": ("Pending actions", "待执行动作"),
    "delayed_rules": ("Delayed rules", "延迟规则"),
    "kind": ("kind", "类型"),
    "unmasked": ("Show unmasked", "显示完整信息"),
    "masked_note": ("Phone numbers and e-mails are masked.", "手机号和邮箱已打码。"),
    "upcoming": ("Upcoming firings", "即将执行"),
    "when": ("when", "时间"),
    "reach": ("reach now", "当前覆盖"),
    "no_campaigns": ("The playbook declares no campaigns.", "剧本未声明群发。"),
    "no_upcoming": ("No firing in the next 30 days.", "未来 30 天没有执行。"),
    "preview": ("Preview", "预览"),
    "at": ("at", "时刻"),
    "audience": ("audience", "受众"),
    "of_customers": ("of {n} customers", "共 {n} 位客户"),
    "pilot": ("pilot", "试点"),
    "held_out": ("held out", "对照组"),
    "variants": ("variants", "变体"),
    "variant": ("variant", "变体"),
    "messages": ("Rendered messages", "渲染后的消息"),
    "sample": ("Sample members", "成员样例"),
    "bad_time": ("Not a time: {text}", "不是有效时间：{text}"),
    "handover_summary": ("{n} customers handed over, {done} taken over, {waiting} not yet.",
                         "共 {n} 位客户交接，{done} 位已接替，{waiting} 位尚未接替。"),
    "not_taken_over": ("Not taken over yet", "尚未接替"),
    "departing": ("departing staff", "离职员工"),
    "successor": ("successor", "接替人"),
    "outbox": ("outbox", "发件箱"),
    "platform": ("platform", "平台"),
    "all_taken_over": ("Every customer is taken over.", "所有客户均已接替。"),
    "transfers": ("WeCom transfer results", "企业微信继承结果"),
    "taken_over": ("taken over", "已接替"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "timeline": ("Timeline (as `sopkit explain` tells it)", "时间线（即 `sopkit explain` 的说明）"),
    "timeline_help": ("Events, changes, actions and near misses, from the records the server "
                      "kept.", "事件、变化、动作和差一点触发的规则，来自服务保留的记录。"),
    "no_history": ("No timeline: this server keeps no history (`sopkit serve --no-history`); "
                   "restart it with --history to keep the records it applies from then on.",
                   "没有时间线：此服务不保留历史记录（`sopkit serve --no-history`）；"
                   "用 --history 重启后，将保留此后应用的记录。"),
    "history_partial": ("The kept history does not reach back to the store's start: earlier "
                        "events are missing here.",
                        "保留的历史记录未覆盖存储的开始：更早的事件不在此列。"),
    "no_entries": ("The kept history holds nothing about this customer.",
                   "保留的历史记录中没有此客户的信息。"),
    "kind_event": ("event", "事件"),
    "kind_metric": ("fact", "指标"),
    "kind_score": ("score", "评分"),
    "kind_tag": ("tag", "标签"),
    "kind_stage": ("stage", "阶段"),
    "kind_owner": ("owner", "负责人"),
    "kind_action": ("action", "动作"),
    "kind_near_miss": ("near miss", "差一点触发"),
    "kind_quarantine": ("quarantined", "已隔离"),
    "past_firings": ("Results of past firings", "历次执行结果"),
    "no_past": ("No campaign has fired yet.", "尚无群发执行。"),
    "firing": ("firing", "执行"),
    "rows": ("outbox rows", "发件箱行"),
    "tasks": ("tasks", "任务"),
    "sent": ("sent", "已发送"),
    "waiting": ("waiting", "等待中"),
    "send_rate": ("send rate", "发送率"),
    "running_version": ("Running version", "运行版本"),
    "store_holds": ("store holds", "存储记录"),
    "migrations": ("Migration history", "迁移历史"),
    "no_migrations": ("No migration yet (`sopkit migrate`).", "尚无迁移（`sopkit migrate`）。"),
    "from": ("from", "从"),
    "to": ("to", "到"),
    "changes": ("changes", "变更"),
    "findings": ("check --strict findings", "check --strict 检查结果"),
    "no_findings": ("No findings: the playbook passes check --strict.",
                    "没有问题：剧本通过 check --strict。"),
    "location": ("location", "位置"),
    "message": ("message", "信息"),
    "severity": ("severity", "级别"),
    "new_simulation": ("Run a simulation of the live playbook", "用当前剧本运行模拟"),
    "history": ("history", "历史数据"),
    "profiles": ("profiles", "客户资料"),
    "no_histories": ("No stored histories: start `sopkit serve` with --histories DIR.",
                     "没有存储的历史数据：启动 `sopkit serve` 时加 --histories DIR。"),
    "empty_histories": ("The --histories folder holds no .jsonl, .csv or .parquet file.",
                        "--histories 文件夹中没有 .jsonl、.csv 或 .parquet 文件。"),
    "no_page": ("Nothing here.", "此处没有内容。"),
    "start": ("Start", "开始"),
    "jobs": ("Simulations", "模拟任务"),
    "progress": ("progress", "进度"),
    "done": ("done", "完成"),
    "failed": ("failed", "失败"),
    "report": ("Open the report", "打开报告"),
    "summary": ("summary", "摘要"),
    "forbidden": ("Forbidden", "禁止访问"),
    "csrf": ("The form is stale or came from another site; reload the page and try again.",
             "表单已过期或来自其他站点；请刷新页面后重试。"),
    "error": ("Error", "错误"),
    "go_back": ("Back", "返回"),
}


def pick(accept_language: str | None) -> str:
    """The best of LANGUAGES for an Accept-Language header (English by default)."""
    best, best_q = "en", -1.0
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        base = tag.split("-")[0]
        if base in LANGUAGES and q > best_q and q > 0:
            best, best_q = base, q - position * 1e-6  # ties: the first listed wins
    return best


def words(language: str) -> dict[str, str]:
    """Every word in `language`."""
    i = LANGUAGES.index(language)
    return {key: pair[i] for key, pair in _WORDS.items()}
