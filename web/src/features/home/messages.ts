// Texts of the home screens.
// zh-CN is the source of the keys; English must translate every one of them.

export const zhCN = {
  "home.welcome": "您好，{name}",
  "profile.title": "我的账号",
  "profile.username": "用户名",
  "profile.role": "角色",
  "profile.institution": "机构",
  "profile.department": "科室",
  "profile.title_": "职称",
  "profile.prescribe": "处方权",
  "profile.totp": "双因素认证",
  "institution.title": "所属机构",
  "institution.code": "机构代码",
  "institution.kind": "类型",
  "institution.region": "行政区划",
  "institution.departments": "科室",
  "institution.noDepartments": "尚未设置科室。",
  "notFound.title": "页面不存在",
  "notFound.back": "返回首页",
};

export const en: Record<keyof typeof zhCN, string> = {
  "home.welcome": "Hello, {name}",
  "profile.title": "My account",
  "profile.username": "Username",
  "profile.role": "Role",
  "profile.institution": "Institution",
  "profile.department": "Department",
  "profile.title_": "Title",
  "profile.prescribe": "Prescribing right",
  "profile.totp": "Two-factor sign-in",
  "institution.title": "My institution",
  "institution.code": "Code",
  "institution.kind": "Kind",
  "institution.region": "Region",
  "institution.departments": "Departments",
  "institution.noDepartments": "No departments yet.",
  "notFound.title": "Page not found",
  "notFound.back": "Back to the home page",
};
