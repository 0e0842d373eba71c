// The drugs offered in the prescribing form: the demo catalogue's unrestricted drugs
// (server/prescriptions/data/drug_catalogue.json). The server checks every item against its
// own catalogue (unknown_drug, drug_mismatch); this list only spares typing codes.
export interface Drug {
  code: string;
  name: string;
  english: string;
  strength: string;
  doseUnit: string;
  form: string;
}

export const DRUGS: Drug[] = [
  { code: "C08CA01", name: "苯磺酸氨氯地平片", english: "amlodipine", strength: "5mg", doseUnit: "mg", form: "片剂" },
  { code: "C08CA05", name: "硝苯地平控释片", english: "nifedipine", strength: "30mg", doseUnit: "mg", form: "控释片" },
  { code: "C09AA02", name: "马来酸依那普利片", english: "enalapril", strength: "10mg", doseUnit: "mg", form: "片剂" },
  { code: "C09CA01", name: "氯沙坦钾片", english: "losartan", strength: "50mg", doseUnit: "mg", form: "片剂" },
  { code: "C09CA03", name: "缬沙坦胶囊", english: "valsartan", strength: "80mg", doseUnit: "mg", form: "胶囊" },
  { code: "C07AB02", name: "琥珀酸美托洛尔缓释片", english: "metoprolol", strength: "47.5mg", doseUnit: "mg", form: "缓释片" },
  { code: "C03AA03", name: "氢氯噻嗪片", english: "hydrochlorothiazide", strength: "25mg", doseUnit: "mg", form: "片剂" },
  { code: "C03DA01", name: "螺内酯片", english: "spironolactone", strength: "20mg", doseUnit: "mg", form: "片剂" },
  { code: "C01AA05", name: "地高辛片", english: "digoxin", strength: "0.25mg", doseUnit: "mg", form: "片剂" },
  { code: "A10BA02", name: "盐酸二甲双胍片", english: "metformin", strength: "500mg", doseUnit: "mg", form: "片剂" },
  { code: "A10BB12", name: "格列美脲片", english: "glimepiride", strength: "2mg", doseUnit: "mg", form: "片剂" },
  { code: "A10BH01", name: "磷酸西格列汀片", english: "sitagliptin", strength: "100mg", doseUnit: "mg", form: "片剂" },
  { code: "C10AA05", name: "阿托伐他汀钙片", english: "atorvastatin", strength: "20mg", doseUnit: "mg", form: "片剂" },
  { code: "C10AA01", name: "辛伐他汀片", english: "simvastatin", strength: "20mg", doseUnit: "mg", form: "片剂" },
  { code: "B01AC06", name: "阿司匹林肠溶片", english: "aspirin", strength: "100mg", doseUnit: "mg", form: "肠溶片" },
  { code: "B01AC04", name: "硫酸氢氯吡格雷片", english: "clopidogrel", strength: "75mg", doseUnit: "mg", form: "片剂" },
  { code: "B01AA03", name: "华法林钠片", english: "warfarin", strength: "2.5mg", doseUnit: "mg", form: "片剂" },
  { code: "A02BC01", name: "奥美拉唑肠溶胶囊", english: "omeprazole", strength: "20mg", doseUnit: "mg", form: "肠溶胶囊" },
  { code: "A02BC05", name: "艾司奥美拉唑镁肠溶片", english: "esomeprazole", strength: "20mg", doseUnit: "mg", form: "肠溶片" },
  { code: "J01CA04", name: "阿莫西林胶囊", english: "amoxicillin", strength: "500mg", doseUnit: "mg", form: "胶囊" },
  { code: "J01CR02", name: "阿莫西林克拉维酸钾片", english: "amoxicillin-clavulanate", strength: "457mg", doseUnit: "mg", form: "片剂" },
  { code: "J01DC02", name: "头孢呋辛酯片", english: "cefuroxime", strength: "250mg", doseUnit: "mg", form: "片剂" },
  { code: "J01FA10", name: "阿奇霉素片", english: "azithromycin", strength: "250mg", doseUnit: "mg", form: "片剂" },
  { code: "J01MA12", name: "左氧氟沙星片", english: "levofloxacin", strength: "500mg", doseUnit: "mg", form: "片剂" },
  { code: "M01AE01", name: "布洛芬缓释胶囊", english: "ibuprofen", strength: "300mg", doseUnit: "mg", form: "缓释胶囊" },
  { code: "N02BE01", name: "对乙酰氨基酚片", english: "paracetamol", strength: "500mg", doseUnit: "mg", form: "片剂" },
  { code: "R03AC02", name: "硫酸沙丁胺醇吸入气雾剂", english: "salbutamol", strength: "100μg/揿", doseUnit: "μg", form: "气雾剂" },
  { code: "R03BA02", name: "布地奈德吸入粉雾剂", english: "budesonide", strength: "200μg/吸", doseUnit: "μg", form: "粉雾剂" },
  { code: "R06AE07", name: "盐酸西替利嗪片", english: "cetirizine", strength: "10mg", doseUnit: "mg", form: "片剂" },
  { code: "H03AA01", name: "左甲状腺素钠片", english: "levothyroxine", strength: "50μg", doseUnit: "μg", form: "片剂" },
  { code: "A12BA01", name: "氯化钾缓释片", english: "potassium chloride", strength: "500mg", doseUnit: "mg", form: "缓释片" },
  { code: "N06AB06", name: "盐酸舍曲林片", english: "sertraline", strength: "50mg", doseUnit: "mg", form: "片剂" },
];
