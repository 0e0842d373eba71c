// Texts of the auth screens.
// zh-CN is the source of the keys; English must translate every one of them.

export const zhCN = {
  "login.title": "登录",
  "login.username": "用户名",
  "login.password": "密码",
  "login.totp": "动态验证码（6 位）",
  "login.totpHint": "此账号需要动态验证码，请输入验证器应用中的 6 位数字。",
  "login.submit": "登录",
  "login.busy": "正在登录…",
};

export const en: Record<keyof typeof zhCN, string> = {
  "login.title": "Sign in",
  "login.username": "Username",
  "login.password": "Password",
  "login.totp": "Authenticator code (6 digits)",
  "login.totpHint": "This account needs a one-time code: enter the 6 digits from your authenticator app.",
  "login.submit": "Sign in",
  "login.busy": "Signing in…",
};
